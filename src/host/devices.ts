/** Device nodes probed by opening them (present is not enough: the user must be able to use them). */
import { open } from "node:fs/promises";
import { constants } from "node:fs";

export interface DeviceFacts {
  path: string;
  /** undefined when the open succeeded; otherwise the errno code (ENOENT = absent). */
  openErrno?: string;
}

export interface DeviceResult {
  available: boolean;
  detail: string;
}

export async function probeDevice(path: string): Promise<DeviceFacts> {
  try {
    // O_NONBLOCK: opening a device must never wait; /dev/net/tun and /dev/vhost-vsock return at once.
    const fh = await open(path, constants.O_RDWR | constants.O_NONBLOCK);
    await fh.close();
    return { path };
  } catch (e) {
    return { path, openErrno: (e as NodeJS.ErrnoException).code ?? "EUNKNOWN" };
  }
}

export function decideDevice(f: DeviceFacts): DeviceResult {
  if (f.openErrno === undefined) return { available: true, detail: `${f.path} present and opens read-write` };
  if (f.openErrno === "ENOENT") return { available: false, detail: `${f.path} does not exist` };
  if (f.openErrno === "EACCES" || f.openErrno === "EPERM") return { available: false, detail: `${f.path} exists but this user cannot open it (${f.openErrno})` };
  return { available: false, detail: `${f.path} could not be opened (${f.openErrno})` };
}
