/*
 * kvm-probe: does /dev/kvm really run guest code?
 *
 * A device node that opens is not proof: paravirtual KVMs (e.g. PVM, which runs nested guests
 * without hardware virtualization) accept KVM_CREATE_VM but only run specially built guest
 * kernels. A stock kernel boot needs real mode (firmware / boot protocol entry) and then 64-bit
 * long mode, so this probe runs a few instructions in each, in two fresh VMs:
 *   real: 16-bit real mode at 0x1000:  mov al,0x5a ; out 0xf1,al ; hlt
 *   long: 64-bit long mode with identity-mapped 2 MiB page: the same, with port 0xf2
 * Each stage must produce KVM_EXIT_IO on the expected port with the expected byte, then KVM_EXIT_HLT.
 *   speed: 64-bit long mode, a tight `dec rcx; jnz` loop for at most SPEED_BUDGET_MS of wall time;
 *          reports guest instructions per CPU-second (`ips=`). Hardware-assisted KVM runs this loop
 *          at native speed (~1e9/s); a KVM that emulates guest instructions in software (as the
 *          paravirtual kvm_pvm module does for a non-PVM guest) manages a few million per second,
 *          far slower than QEMU's own TCG: a stock kernel "hangs" there. CPU time, not wall time,
 *          is the denominator so that a busy host does not make hardware KVM look slow.
 *
 * Output: one line per step, "key=value" pairs, machine-read by src/host/kvm.ts:
 *   stage=<open|api|real|long|speed|timeout> ok=<0|1> [errno=N] [exit=N] [ips=N] [cpu_us=N] [detail=...]
 * Exit code 0 when every stage passed, 1 otherwise, 2 on usage error. A stage that hangs is cut
 * off by alarm(): the caller also bounds the whole process with a timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x200000 /* 2 MiB: one large page in long mode */
#define CODE_ADDR 0x1000
#define PML4_ADDR 0x2000
#define PDPT_ADDR 0x3000
#define PD_ADDR 0x4000
#define GDT_ADDR 0x5000
#define SPEED_ITERATIONS 20000000ULL /* 40M instructions: ~20 ms on hardware KVM */
#define SPEED_BUDGET_MS 250

static const char *device = "/dev/kvm";

static void report(const char *stage, int ok, int err, int exit_reason, const char *detail) {
  printf("stage=%s ok=%d", stage, ok);
  if (err) printf(" errno=%d", err);
  if (exit_reason >= 0) printf(" exit=%d", exit_reason);
  if (detail && *detail) printf(" detail=%s", detail);
  printf("\n");
  fflush(stdout);
}

static void on_alarm(int sig) {
  (void)sig;
  /* async-signal-safe: write + _exit only */
  static const char msg[] = "stage=timeout ok=0 detail=KVM_RUN_did_not_return\n";
  ssize_t r = write(1, msg, sizeof msg - 1);
  (void)r;
  _exit(1);
}

struct vm {
  int vm_fd, vcpu_fd;
  uint8_t *mem;
  struct kvm_run *run;
};

/* Create a VM with MEM_SIZE bytes of guest memory at address 0 and one vCPU. */
static int make_vm(int kvm, const char *stage, struct vm *vm) {
  char detail[96];
  vm->vm_fd = ioctl(kvm, KVM_CREATE_VM, 0UL);
  if (vm->vm_fd < 0) {
    report(stage, 0, errno, -1, "KVM_CREATE_VM_failed");
    return -1;
  }
  vm->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (vm->mem == MAP_FAILED) {
    report(stage, 0, errno, -1, "mmap_guest_memory_failed");
    return -1;
  }
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)vm->mem};
  if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    report(stage, 0, errno, -1, "KVM_SET_USER_MEMORY_REGION_failed");
    return -1;
  }
  vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0UL);
  if (vm->vcpu_fd < 0) {
    report(stage, 0, errno, -1, "KVM_CREATE_VCPU_failed");
    return -1;
  }
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) {
    report(stage, 0, errno, -1, "KVM_GET_VCPU_MMAP_SIZE_failed");
    return -1;
  }
  vm->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
  if (vm->run == MAP_FAILED) {
    snprintf(detail, sizeof detail, "mmap_kvm_run_failed");
    report(stage, 0, errno, -1, detail);
    return -1;
  }
  return 0;
}

/* Run until the expected OUT then HLT; report what happened instead when it differs. */
static int run_expect(struct vm *vm, const char *stage, uint16_t port, uint8_t value) {
  char detail[128];
  int saw_out = 0;
  for (int i = 0; i < 8; i++) {
    alarm(2);
    int r = ioctl(vm->vcpu_fd, KVM_RUN, 0);
    alarm(0);
    if (r < 0) {
      report(stage, 0, errno, -1, "KVM_RUN_failed");
      return -1;
    }
    struct kvm_run *run = vm->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t got = *((uint8_t *)run + run->io.data_offset);
      if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == port && got == value) {
        saw_out = 1;
        continue;
      }
      snprintf(detail, sizeof detail, "unexpected_io_port_0x%x_value_0x%x", run->io.port, got);
      report(stage, 0, 0, (int)run->exit_reason, detail);
      return -1;
    }
    case KVM_EXIT_HLT:
      if (saw_out) {
        report(stage, 1, 0, (int)run->exit_reason, "");
        return 0;
      }
      report(stage, 0, 0, (int)run->exit_reason, "halted_before_output");
      return -1;
    case KVM_EXIT_FAIL_ENTRY:
      snprintf(detail, sizeof detail, "entry_failed_hw_reason_0x%llx",
               (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
      report(stage, 0, 0, (int)run->exit_reason, detail);
      return -1;
    case KVM_EXIT_INTERNAL_ERROR:
      snprintf(detail, sizeof detail, "internal_error_suberror_%u", run->internal.suberror);
      report(stage, 0, 0, (int)run->exit_reason, detail);
      return -1;
    case KVM_EXIT_SHUTDOWN:
      report(stage, 0, 0, (int)run->exit_reason, "guest_triple_fault_shutdown");
      return -1;
    default:
      snprintf(detail, sizeof detail, "unexpected_exit_%u", run->exit_reason);
      report(stage, 0, 0, (int)run->exit_reason, detail);
      return -1;
    }
  }
  report(stage, 0, 0, -1, "too_many_exits");
  return -1;
}

static int stage_real(int kvm) {
  struct vm vm;
  if (make_vm(kvm, "real", &vm) < 0) return -1;
  static const uint8_t code[] = {0xb0, 0x5a, 0xe6, 0xf1, 0xf4}; /* mov al,0x5a; out 0xf1,al; hlt */
  memcpy(vm.mem + CODE_ADDR, code, sizeof code);
  struct kvm_sregs sregs;
  if (ioctl(vm.vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
    report("real", 0, errno, -1, "KVM_GET_SREGS_failed");
    return -1;
  }
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vm.vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
    report("real", 0, errno, -1, "KVM_SET_SREGS_failed");
    return -1;
  }
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE_ADDR;
  regs.rflags = 0x2;
  if (ioctl(vm.vcpu_fd, KVM_SET_REGS, &regs) < 0) {
    report("real", 0, errno, -1, "KVM_SET_REGS_failed");
    return -1;
  }
  return run_expect(&vm, "real", 0xf1, 0x5a);
}

/* Put the vCPU in 64-bit long mode at CODE_ADDR with the first 2 MiB identity mapped. */
static int enter_long_mode(struct vm *vm, const char *stage, uint64_t rcx) {
  /* Identity map the first 2 MiB with one large page: PML4 -> PDPT -> PD (PS). */
  uint64_t *pml4 = (uint64_t *)(vm->mem + PML4_ADDR);
  uint64_t *pdpt = (uint64_t *)(vm->mem + PDPT_ADDR);
  uint64_t *pd = (uint64_t *)(vm->mem + PD_ADDR);
  pml4[0] = PDPT_ADDR | 0x3; /* present | writable */
  pdpt[0] = PD_ADDR | 0x3;
  pd[0] = 0x83; /* present | writable | page size (2 MiB) */
  /* A GDT with a 64-bit code and a data segment, so a guest that reloads segments finds them. */
  uint64_t *gdt = (uint64_t *)(vm->mem + GDT_ADDR);
  gdt[0] = 0;
  gdt[1] = 0x00af9b000000ffffULL; /* code: L=1, P, DPL0, execute/read */
  gdt[2] = 0x00cf93000000ffffULL; /* data: P, DPL0, read/write */

  struct kvm_sregs sregs;
  if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
    report(stage, 0, errno, -1, "KVM_GET_SREGS_failed");
    return -1;
  }
  sregs.gdt.base = GDT_ADDR;
  sregs.gdt.limit = 3 * 8 - 1;
  struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 11, .present = 1,
                           .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
  struct kvm_segment ds = cs;
  ds.type = 3;
  ds.selector = 0x10;
  ds.l = 0;
  ds.db = 1;
  sregs.cs = cs;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
  sregs.cr3 = PML4_ADDR;
  sregs.cr4 = 1u << 5;                          /* PAE */
  sregs.cr0 = 0x80000001u | (1u << 4) | (1u << 5) | (1u << 16); /* PG | PE | ET | NE | WP */
  sregs.efer = (1u << 8) | (1u << 10);          /* LME | LMA */
  if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
    report(stage, 0, errno, -1, "KVM_SET_SREGS_failed");
    return -1;
  }
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE_ADDR;
  regs.rsp = 0x1ff000;
  regs.rflags = 0x2;
  regs.rcx = rcx;
  if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0) {
    report(stage, 0, errno, -1, "KVM_SET_REGS_failed");
    return -1;
  }
  return 0;
}

static int stage_long(int kvm) {
  struct vm vm;
  if (make_vm(kvm, "long", &vm) < 0) return -1;
  static const uint8_t code[] = {0xb0, 0xa5, 0xe6, 0xf2, 0xf4}; /* mov al,0xa5; out 0xf2,al; hlt */
  memcpy(vm.mem + CODE_ADDR, code, sizeof code);
  if (enter_long_mode(&vm, "long", 0) < 0) return -1;
  return run_expect(&vm, "long", 0xf2, 0xa5);
}

static volatile sig_atomic_t budget_over;
static void on_budget(int sig) {
  (void)sig;
  budget_over = 1;
}

static uint64_t thread_cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* How fast does the vCPU execute ordinary guest instructions? */
static int stage_speed(int kvm) {
  struct vm vm;
  if (make_vm(kvm, "speed", &vm) < 0) return -1;
  /* l: dec rcx ; jnz l ; hlt */
  static const uint8_t code[] = {0x48, 0xff, 0xc9, 0x75, 0xfb, 0xf4};
  memcpy(vm.mem + CODE_ADDR, code, sizeof code);
  if (enter_long_mode(&vm, "speed", SPEED_ITERATIONS) < 0) return -1;
  /* The wall-clock budget interrupts KVM_RUN with EINTR (no SA_RESTART); rcx then tells how far
   * the loop got. The same timer bounds this stage; the caller bounds the whole process. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_budget;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval budget = {.it_interval = {0, 0}, .it_value = {0, SPEED_BUDGET_MS * 1000}};
  budget_over = 0;
  uint64_t cpu0 = thread_cpu_us();
  setitimer(ITIMER_REAL, &budget, NULL);
  int r = ioctl(vm.vcpu_fd, KVM_RUN, 0);
  int run_errno = errno;
  uint64_t cpu1 = thread_cpu_us();
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  signal(SIGALRM, on_alarm);
  if (r < 0 && run_errno != EINTR) {
    report("speed", 0, run_errno, -1, "KVM_RUN_failed");
    return -1;
  }
  if (r == 0 && vm.run->exit_reason != KVM_EXIT_HLT && vm.run->exit_reason != KVM_EXIT_INTR) {
    char detail[64];
    snprintf(detail, sizeof detail, "unexpected_exit_%u", vm.run->exit_reason);
    report("speed", 0, 0, (int)vm.run->exit_reason, detail);
    return -1;
  }
  struct kvm_regs regs;
  if (ioctl(vm.vcpu_fd, KVM_GET_REGS, &regs) < 0) {
    report("speed", 0, errno, -1, "KVM_GET_REGS_failed");
    return -1;
  }
  uint64_t done = SPEED_ITERATIONS - regs.rcx;
  uint64_t cpu_us = cpu1 > cpu0 ? cpu1 - cpu0 : 1;
  /* two instructions per iteration */
  uint64_t ips = (uint64_t)((double)done * 2.0 * 1e6 / (double)cpu_us);
  printf("stage=speed ok=1 ips=%llu cpu_us=%llu iterations=%llu finished=%d\n", (unsigned long long)ips,
         (unsigned long long)cpu_us, (unsigned long long)done, regs.rcx == 0 ? 1 : 0);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2) {
    fprintf(stderr, "usage: kvm-probe [DEVICE]\n");
    return 2;
  }
  if (argc == 2) device = argv[1];
  signal(SIGALRM, on_alarm);
  int kvm = open(device, O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    report("open", 0, errno, -1, "");
    return 1;
  }
  report("open", 1, 0, -1, "");
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) {
    char detail[64];
    snprintf(detail, sizeof detail, "api_version_%d", api);
    report("api", 0, api < 0 ? errno : 0, -1, detail);
    return 1;
  }
  report("api", 1, 0, -1, "");
  /* Run both stages even if the first fails: the pair tells a paravirtual KVM (long mode only)
   * from a broken one (neither). */
  int real = stage_real(kvm);
  int lng = stage_long(kvm);
  /* Speed is a measurement, not a verdict: src/host/kvm.ts decides what is fast enough. */
  int speed = lng == 0 ? stage_speed(kvm) : -1;
  return real == 0 && lng == 0 && speed == 0 ? 0 : 1;
}
