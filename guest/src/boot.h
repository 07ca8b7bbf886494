/* PID 1 boot steps: from the initramfs to the workspace's root filesystem. */
#ifndef MA_BOOT_H
#define MA_BOOT_H
#include <stdbool.h>

/* Mounts, modules, root switch, pseudo filesystems, lo. Returns false (after logging why) on a fatal step. */
bool boot_pid1(void);
/* Opens the virtio-serial port named `name`, waiting up to timeout_ms for it to appear; -1 on failure. */
int open_virtio_port(const char *name, int timeout_ms);
/* Ends the VM: sync, then power off (falls back to halt/reboot so QEMU exits either way). Never returns. */
void power_off(void) __attribute__((noreturn));
void set_hostname(const char *name);

#endif
