/**
 * The frame codec of the guest protocol (docs/protocol.md). Pure: no I/O. The decoder keeps a list
 * of chunks plus a byte count, checks every header (length against the maximum *before* buffering the
 * payload, type, reserved bytes, stream/channel rules) and fails once, with a typed error, forever.
 */
import { ChannelErrors } from "./errors.ts";
import type { MicroagentError } from "../contract/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";

export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_BYTES = 12;
/** The largest payload the host accepts unless configured otherwise. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;
/** Per-stream window the host offers the guest unless configured otherwise. */
export const DEFAULT_WINDOW_BYTES = 256 * 1024;
/** Hard ceiling for any configured frame size: the protocol's length field could say 4 GiB. */
export const MAX_FRAME_BYTES_LIMIT = 16 * 1024 * 1024;

export const FRAME_TYPES = {
  hello: 1,
  welcome: 2,
  open: 3,
  data: 4,
  eof: 5,
  credit: 6,
  msg: 7,
  close: 8,
  goaway: 9,
} as const;
export type FrameTypeName = keyof typeof FRAME_TYPES;
export type FrameTypeCode = (typeof FRAME_TYPES)[FrameTypeName];
const TYPE_NAMES = new Map<number, FrameTypeName>(
  Object.entries(FRAME_TYPES).map(([k, v]) => [v, k as FrameTypeName]),
);

/** Channels inside a stream: input to the guest process, its stdout (or pty output), its stderr. */
export const CHANNELS = { in: 0, out: 1, err: 2 } as const;
export type ChannelNumber = (typeof CHANNELS)[keyof typeof CHANNELS];

export interface Frame {
  type: FrameTypeName;
  /** 0 is the control stream; host-opened streams are odd, guest-opened even. */
  stream: number;
  channel: number;
  payload: Buffer;
}

function violation(message: string, details?: Record<string, unknown>): MicroagentError {
  return ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message, ...(details ? { details } : {}) });
}

/** Checks the rules a frame must follow whoever sends it; returns the violation or undefined. */
export function frameRuleViolation(type: FrameTypeName, stream: number, channel: number, length: number): string | undefined {
  const controlOnly = type === "hello" || type === "welcome" || type === "goaway";
  if (controlOnly && stream !== 0) return `${type} frames belong to stream 0 (got stream ${stream})`;
  if ((type === "open" || type === "data" || type === "eof" || type === "credit" || type === "close") && stream === 0)
    return `${type} frames need a stream other than 0`;
  if (type === "data" || type === "eof") {
    if (channel > CHANNELS.err) return `channel ${channel} does not exist (0 in, 1 out, 2 err)`;
  } else if (channel !== 0) {
    return `${type} frames carry channel 0 (got ${channel})`;
  }
  if (type === "credit" && length !== 4) return `credit frames carry exactly 4 bytes (got ${length})`;
  if (type === "eof" && length !== 0) return `eof frames carry no payload (got ${length} bytes)`;
  return undefined;
}

/** Encodes one frame. Refuses payloads over `maxPayloadBytes` (the peer's announced maximum). */
export function encodeFrame(frame: Frame, maxPayloadBytes: number): Buffer {
  const code = FRAME_TYPES[frame.type];
  if (frame.payload.length > maxPayloadBytes)
    throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({
      message: `refusing to send a ${frame.payload.length}-byte ${frame.type} frame: the peer accepts at most ${maxPayloadBytes}`,
      remediation: "This is a bug in microagent's sender: split the payload (report it with --json output).",
    });
  const bad = frameRuleViolation(frame.type, frame.stream, frame.channel, frame.payload.length);
  if (bad) throw violation(`refusing to send an invalid frame: ${bad}`);
  if (!Number.isInteger(frame.stream) || frame.stream < 0 || frame.stream > 0xffffffff) throw violation(`stream id ${frame.stream} is out of range`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + frame.payload.length);
  out.writeUInt32BE(frame.payload.length, 0);
  out.writeUInt32BE(frame.stream, 4);
  out.writeUInt8(code, 8);
  out.writeUInt8(frame.channel, 9);
  out.writeUInt16BE(0, 10);
  frame.payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

type DecoderState = "header" | "payload" | "failed";

export interface FrameDecoderOptions {
  /** Largest payload accepted; a header declaring more fails before any payload is buffered. */
  maxPayloadBytes: number;
}

export class FrameDecoder {
  readonly #maxPayloadBytes: number;
  readonly #held = new ByteQueue();
  #state: DecoderState = "header";
  #pending: { type: FrameTypeName; stream: number; channel: number; length: number } | undefined;
  #failure: MicroagentError | undefined;

  constructor(opts: FrameDecoderOptions) {
    if (!Number.isInteger(opts.maxPayloadBytes) || opts.maxPayloadBytes < 0 || opts.maxPayloadBytes > MAX_FRAME_BYTES_LIMIT)
      throw new RangeError(`maxPayloadBytes must be an integer in [0, ${MAX_FRAME_BYTES_LIMIT}]`);
    this.#maxPayloadBytes = opts.maxPayloadBytes;
  }

  /** Bytes held while waiting for the rest of a frame (never more than one header + max payload). */
  get bufferedBytes(): number {
    return this.#held.length;
  }

  get failed(): boolean {
    return this.#state === "failed";
  }

  /** Feeds bytes; returns every frame they complete. Throws the same typed error on every call after a violation. */
  push(chunk: Uint8Array): Frame[] {
    if (this.#state === "failed") throw this.#failure!;
    const frames: Frame[] = [];
    this.#held.push(chunk);
    for (;;) {
      if (this.#state === "header") {
        if (this.#held.length < FRAME_HEADER_BYTES) break;
        const h = this.#held.take(FRAME_HEADER_BYTES);
        const length = h.readUInt32BE(0);
        const stream = h.readUInt32BE(4);
        const code = h.readUInt8(8);
        const channel = h.readUInt8(9);
        const reserved = h.readUInt16BE(10);
        if (length > this.#maxPayloadBytes)
          return this.#fail(`frame declares a ${length}-byte payload; the limit is ${this.#maxPayloadBytes}`, { length, stream });
        const type = TYPE_NAMES.get(code);
        if (!type) return this.#fail(`unknown frame type ${code}`, { type: code, stream });
        if (reserved !== 0) return this.#fail(`reserved header bytes must be zero (got ${reserved})`, { stream });
        const bad = frameRuleViolation(type, stream, channel, length);
        if (bad) return this.#fail(bad, { type, stream, channel, length });
        this.#pending = { type, stream, channel, length };
        this.#state = "payload";
      }
      if (this.#state === "payload") {
        const p = this.#pending!;
        if (this.#held.length < p.length) break;
        frames.push({ type: p.type, stream: p.stream, channel: p.channel, payload: this.#held.take(p.length) });
        this.#pending = undefined;
        this.#state = "header";
      }
    }
    return frames;
  }

  #fail(message: string, details: Record<string, unknown>): never {
    this.#state = "failed";
    this.#held.clear();
    this.#failure = violation(message, details);
    throw this.#failure;
  }
}
