/**
 * The framing of QEMU's `-netdev stream` (and `-netdev socket`): every Ethernet frame is preceded by its
 * length as a 4-byte big-endian integer. Pure: the supervisor feeds socket chunks in and writes encoded
 * frames out. The decoder keeps a chunk list plus a byte count (no Buffer.concat per chunk), checks the
 * declared length before buffering a byte of the frame, and fails once, with a typed error, forever: a
 * length QEMU can never produce means the link is corrupt, and the supervisor closes it.
 */
import { NetErrors } from "./errors.ts";
import type { MicroagentError } from "../contract/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";

export const STREAM_HEADER_BYTES = 4;
/**
 * The largest frame accepted: 65535 (the largest IPv4 datagram) plus a 14-byte Ethernet header, rounded up
 * to the research's 65550 so a VLAN tag or virtio padding never trips it. MTU 65520 frames (65534 bytes) fit.
 */
export const MAX_STREAM_FRAME_BYTES = 65550;

type State = "length" | "frame" | "failed";

export class StreamFrameDecoder {
  readonly #held = new ByteQueue();
  #state: State = "length";
  #need = 0;
  #failure: MicroagentError | undefined;
  readonly #maxFrameBytes: number;

  constructor(maxFrameBytes = MAX_STREAM_FRAME_BYTES) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 14 || maxFrameBytes > MAX_STREAM_FRAME_BYTES)
      throw new RangeError(`maxFrameBytes must be an integer in [14, ${MAX_STREAM_FRAME_BYTES}]`);
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held while waiting for the rest of a frame (at most one header plus one maximal frame). */
  get bufferedBytes(): number {
    return this.#held.length;
  }

  get failed(): boolean {
    return this.#state === "failed";
  }

  /** Feeds bytes; returns the frames they complete. Throws NET_FRAME_TOO_LARGE (then on every later call). */
  push(chunk: Uint8Array): Buffer[] {
    if (this.#state === "failed") throw this.#failure!;
    const out: Buffer[] = [];
    this.#held.push(chunk);
    for (;;) {
      if (this.#state === "length") {
        if (this.#held.length < STREAM_HEADER_BYTES) break;
        const len = this.#held.takeUInt32BE();
        if (len > this.#maxFrameBytes) {
          this.#state = "failed";
          this.#held.clear();
          this.#failure = NetErrors.NET_FRAME_TOO_LARGE({
            message: `the netdev stream declared a ${len}-byte frame; the limit is ${this.#maxFrameBytes}`,
            details: { length: len, limit: this.#maxFrameBytes },
          });
          throw this.#failure;
        }
        this.#need = len;
        this.#state = "frame";
      }
      if (this.#held.length < this.#need) break;
      // A zero-length frame carries nothing; skip it rather than hand an empty buffer to the stack.
      if (this.#need > 0) out.push(this.#held.take(this.#need));
      this.#state = "length";
    }
    return out;
  }
}

/** The 4-byte length prefix for one frame, for a writev of [header, frame] without copying the frame. */
export function streamFrameHeader(frameLength: number): Buffer {
  if (!Number.isInteger(frameLength) || frameLength < 0 || frameLength > MAX_STREAM_FRAME_BYTES)
    throw new RangeError(`frame length ${frameLength} is outside [0, ${MAX_STREAM_FRAME_BYTES}]`);
  const h = Buffer.allocUnsafe(STREAM_HEADER_BYTES);
  h.writeUInt32BE(frameLength, 0);
  return h;
}

/** One frame with its length prefix, in one buffer. */
export function encodeStreamFrame(frame: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(STREAM_HEADER_BYTES + frame.length);
  streamFrameHeader(frame.length).copy(out, 0);
  out.set(frame, STREAM_HEADER_BYTES);
  return out;
}
