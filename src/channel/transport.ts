/**
 * Transports give the channel its one byte stream. Under QEMU that is the host end of the
 * virtio-serial port (a unix socket QEMU serves); under Firecracker it will be a vsock connection
 * proxied through a unix socket, a small addition behind the same interface.
 */
import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ChannelErrors } from "./errors.ts";

export interface ChannelTransport {
  /** Human-readable target for messages, e.g. "unix:/path/channel.sock". */
  readonly description: string;
  connect(): Promise<Duplex>;
}

export interface UnixSocketTransportOptions {
  /** Keep retrying ENOENT/ECONNREFUSED (the VMM is still starting) for this long. Default 10 000. */
  connectTimeoutMs?: number;
}

export class UnixSocketTransport implements ChannelTransport {
  readonly path: string;
  readonly #timeoutMs: number;

  constructor(path: string, opts: UnixSocketTransportOptions = {}) {
    this.path = path;
    this.#timeoutMs = opts.connectTimeoutMs ?? 10_000;
  }

  get description(): string {
    return `unix:${this.path}`;
  }

  async connect(): Promise<Duplex> {
    const deadline = Date.now() + this.#timeoutMs;
    let delay = 5;
    for (;;) {
      try {
        return await connectOnce(this.path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const retry = code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN";
        if (!retry || Date.now() + delay > deadline)
          throw ChannelErrors.CHANNEL_CONNECT_FAILED({
            message: `cannot connect to the guest channel at ${this.path}: ${(e as Error).message}`,
            cause: e,
            details: { path: this.path, code },
          });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 100);
      }
    }
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ path });
    const onError = (e: Error): void => {
      s.destroy();
      reject(e);
    };
    s.once("error", onError);
    s.once("connect", () => {
      s.off("error", onError);
      resolve(s);
    });
  });
}
