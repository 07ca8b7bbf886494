/** The QEMU primitives: command line, launcher, QMP client, host facts. */
export { buildQemuArgs, kernelCmdline, assertSocketPath, UNIX_SOCKET_PATH_MAX_BYTES, DEFAULT_CHANNEL_NAME } from "./args.ts";
export type { Accel, QemuDisk, QemuSerial, QemuNetwork, QemuSpec } from "./args.ts";
export { launchQemu, describeExit } from "./launch.ts";
export type { LaunchQemuOptions, QemuHandle, QemuExit } from "./launch.ts";
export { QmpClient, translateQmpError, QMP_MAX_LINE_BYTES } from "./qmp.ts";
export type { QmpEvent, QmpStatus, QmpConnectOptions } from "./qmp.ts";
export { findQemu, tscKhz, QEMU_BINARY } from "./host.ts";
export type { FindQemuOptions } from "./host.ts";
export { waitForSerial, tailFile } from "./serial.ts";
export { pauseVm, resumeVm, freezeDisk, saveVmState, restoreVmState, restoreLaunchSpec, createOverlayImage, shellQuote, hostFilename } from "./snapshot.ts";
export type { PauseResult, FreezeDiskOptions, FreezeDiskResult, SaveVmStateOptions, SaveVmStateResult, RestoreVmStateOptions, RestoreVmStateResult, CreateOverlayImageOptions } from "./snapshot.ts";
export type { WaitForSerialOptions } from "./serial.ts";
