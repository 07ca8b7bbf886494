/**
 * Stream multiplexer over one byte stream. Owns the frame decoder, the stream table and per-stream
 * credit flow control in both directions:
 * - outbound DATA never exceeds the credit the guest granted (writes wait for CREDIT frames);
 * - inbound DATA beyond the window we offered is a protocol violation, so what we buffer for a
 *   stream is bounded by `windowBytes` until its consumer acknowledges (and we grant credit back).
 * Any violation or a closed transport fails the whole mux once, with one typed error.
 */
import type { Duplex } from "node:stream";
import type { MicroagentError } from "../contract/errors.ts";
import { isMicroagentError } from "../contract/errors.ts";
import { ChannelErrors } from "./errors.ts";
import type { Frame, FrameTypeName } from "./frame.ts";
import { encodeFrame, FrameDecoder } from "./frame.ts";
import { encodeJson } from "./messages.ts";

export type StreamEvent =
  | { kind: "data"; channel: number; data: Buffer }
  | { kind: "eof"; channel: number }
  | { kind: "msg"; payload: Buffer }
  | { kind: "close"; payload: Buffer };

export interface MuxHandlers {
  /** Frames on stream 0 (hello, msg, goaway). */
  onControl(frame: Frame): void;
  /** The guest opened a stream; return false to refuse it (the mux then fails). */
  onGuestOpen(stream: MuxStream, payload: Buffer): void;
  /** Called once when the mux dies (violation, transport closed, local close). */
  onFatal(err: MicroagentError): void;
}

export interface MuxOptions {
  /** Largest payload we accept (announced to the guest). */
  maxFrameBytes: number;
  /** Per-stream receive window we offer the guest. */
  windowBytes: number;
  /** Most streams open at once (host- plus guest-opened). */
  maxStreams: number;
}

export class MuxStream {
  readonly id: number;
  readonly #mux: Mux;
  #sendCredit: number;
  #creditWaiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  /** Bytes received and not yet acknowledged by the consumer. */
  #unacked = 0;
  #ended = false;
  onEvent: (ev: StreamEvent) => void = () => {};
  onFail: (err: MicroagentError) => void = () => {};

  constructor(mux: Mux, id: number, sendCredit: number) {
    this.#mux = mux;
    this.id = id;
    this.#sendCredit = sendCredit;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Sends bytes on a channel, split into frames within the guest's max frame and credit. */
  async write(channel: number, data: Uint8Array): Promise<void> {
    let off = 0;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    while (off < buf.length) {
      if (this.#ended) throw ChannelErrors.CHANNEL_CLOSED({ message: `stream ${this.id} is closed` });
      if (this.#sendCredit <= 0) {
        await new Promise<void>((resolve, reject) => this.#creditWaiters.push({ resolve, reject }));
        continue;
      }
      const n = Math.min(buf.length - off, this.#sendCredit, this.#mux.peerMaxFrameBytes);
      this.#sendCredit -= n;
      this.#mux.send({ type: "data", stream: this.id, channel, payload: buf.subarray(off, off + n) });
      off += n;
    }
  }

  eof(channel: number): void {
    if (!this.#ended) this.#mux.send({ type: "eof", stream: this.id, channel, payload: Buffer.alloc(0) });
  }

  sendMessage(msg: unknown): void {
    if (this.#ended) throw ChannelErrors.CHANNEL_CLOSED({ message: `stream ${this.id} is closed` });
    this.#mux.send({ type: "msg", stream: this.id, channel: 0, payload: encodeJson(msg) });
  }

  /** The consumer took n bytes: grant them back to the guest. */
  ack(n: number): void {
    if (n <= 0 || this.#ended) return;
    this.#unacked -= n;
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(n, 0);
    this.#mux.send({ type: "credit", stream: this.id, channel: 0, payload: p });
  }

  /** Ends the stream locally and tells the guest (it kills what runs there). */
  close(): void {
    if (this.#ended) return;
    this.#mux.send({ type: "close", stream: this.id, channel: 0, payload: Buffer.alloc(0) });
    this.end(undefined);
  }

  /** @internal */
  receive(frame: Frame): void {
    switch (frame.type) {
      case "data":
        this.#unacked += frame.payload.length;
        if (this.#unacked > this.#mux.windowBytes)
          throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({
            message: `the guest overran stream ${this.id}'s window (${this.#unacked} > ${this.#mux.windowBytes} bytes unacknowledged)`,
          });
        this.onEvent({ kind: "data", channel: frame.channel, data: frame.payload });
        break;
      case "eof":
        this.onEvent({ kind: "eof", channel: frame.channel });
        break;
      case "credit": {
        this.#sendCredit += frame.payload.readUInt32BE(0);
        if (this.#sendCredit > 2 ** 40) throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `credit overflow on stream ${this.id}` });
        const waiters = this.#creditWaiters;
        this.#creditWaiters = [];
        for (const w of waiters) w.resolve();
        break;
      }
      case "msg":
        this.onEvent({ kind: "msg", payload: frame.payload });
        break;
      case "close":
        this.onEvent({ kind: "close", payload: frame.payload });
        this.end(undefined);
        break;
      default:
        throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `unexpected ${frame.type} frame on stream ${this.id}` });
    }
  }

  /** @internal */
  end(err: MicroagentError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#mux.forget(this);
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    const e = err ?? ChannelErrors.CHANNEL_CLOSED({ message: `stream ${this.id} is closed` });
    for (const w of waiters) w.reject(e);
    if (err) this.onFail(err);
  }
}

export class Mux {
  readonly #duplex: Duplex;
  readonly #decoder: FrameDecoder;
  readonly #handlers: MuxHandlers;
  readonly #opts: MuxOptions;
  readonly #streams = new Map<number, MuxStream>();
  #nextHostId = 1;
  #lastGuestId = 0;
  #failure: MicroagentError | undefined;
  /** Until the guest's hello says otherwise, frames we send stay small. */
  peerMaxFrameBytes = 16 * 1024;
  peerWindowBytes = 64 * 1024;
  /** Until the hello arrives, other frames are stale (meant for a previous host) and skipped. */
  awaitingHello = true;
  #skippedBeforeHello = 0;

  constructor(duplex: Duplex, opts: MuxOptions, handlers: MuxHandlers) {
    this.#duplex = duplex;
    this.#opts = opts;
    this.#handlers = handlers;
    this.#decoder = new FrameDecoder({ maxPayloadBytes: opts.maxFrameBytes });
    duplex.on("data", (chunk: Buffer) => this.#onData(chunk));
    duplex.on("end", () => this.fail(ChannelErrors.CHANNEL_PEER_CLOSED({ message: "the guest closed the channel" })));
    duplex.on("close", () => this.fail(ChannelErrors.CHANNEL_PEER_CLOSED({ message: "the guest channel closed" })));
    duplex.on("error", (e: Error) =>
      this.fail(ChannelErrors.CHANNEL_PEER_CLOSED({ message: `the guest channel failed: ${e.message}`, cause: e })),
    );
  }

  get windowBytes(): number {
    return this.#opts.windowBytes;
  }
  get failure(): MicroagentError | undefined {
    return this.#failure;
  }
  get openStreams(): number {
    return this.#streams.size;
  }

  send(frame: Frame): void {
    if (this.#failure) throw this.#failure;
    this.#duplex.write(encodeFrame(frame, this.peerMaxFrameBytes));
  }

  sendControl(type: FrameTypeName, msg: unknown): void {
    this.send({ type, stream: 0, channel: 0, payload: encodeJson(msg) });
  }

  /** Opens a host stream (odd id) with its open request. */
  open(request: unknown): MuxStream {
    if (this.#failure) throw this.#failure;
    if (this.#streams.size >= this.#opts.maxStreams)
      throw ChannelErrors.CHANNEL_TOO_MANY_STREAMS({ message: `${this.#streams.size} streams are already open (limit ${this.#opts.maxStreams})` });
    const id = this.#nextHostId;
    this.#nextHostId += 2;
    const s = new MuxStream(this, id, this.peerWindowBytes);
    this.#streams.set(id, s);
    this.send({ type: "open", stream: id, channel: 0, payload: encodeJson(request) });
    return s;
  }

  /** @internal */
  forget(s: MuxStream): void {
    this.#streams.delete(s.id);
  }

  fail(err: MicroagentError): void {
    if (this.#failure) return;
    this.#failure = err;
    for (const s of [...this.#streams.values()]) s.end(err);
    this.#duplex.destroy();
    this.#handlers.onFatal(err);
  }

  #onData(chunk: Buffer): void {
    if (this.#failure) return;
    try {
      for (const frame of this.#decoder.push(chunk)) {
        this.#dispatch(frame);
        if (this.#failure) return;
      }
    } catch (e) {
      if (isMicroagentError(e)) {
        // Tell the guest why before hanging up (best effort; the transport may already be gone).
        if (ChannelErrors.CHANNEL_PROTOCOL_VIOLATION.is(e)) {
          try {
            this.#duplex.write(encodeFrame({ type: "goaway", stream: 0, channel: 0, payload: encodeJson({ code: "PROTOCOL_VIOLATION", message: e.message.slice(0, 1000) }) }, 1 << 20));
          } catch {
            /* ignore */
          }
        }
        this.fail(e);
      } else {
        this.fail(ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `handling a guest frame failed: ${(e as Error).message}`, cause: e }));
      }
    }
  }

  #dispatch(frame: Frame): void {
    if (this.awaitingHello && frame.type !== "hello" && frame.type !== "goaway") {
      // Output the guest addressed to a previous host can still be in the pipe: skip it, boundedly.
      if (++this.#skippedBeforeHello > 4096)
        throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: "the guest sent thousands of frames without a hello" });
      return;
    }
    if (frame.stream === 0) {
      this.#handlers.onControl(frame);
      return;
    }
    if (frame.type === "open") {
      if (frame.stream % 2 !== 0 || frame.stream <= this.#lastGuestId)
        throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `the guest opened stream ${frame.stream}: guest streams must be new, even ids` });
      if (this.#streams.size >= this.#opts.maxStreams)
        throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `the guest opened more than ${this.#opts.maxStreams} streams` });
      this.#lastGuestId = frame.stream;
      const s = new MuxStream(this, frame.stream, this.peerWindowBytes);
      this.#streams.set(frame.stream, s);
      this.#handlers.onGuestOpen(s, frame.payload);
      return;
    }
    const s = this.#streams.get(frame.stream);
    if (!s) {
      // A stream we closed may still have frames in flight; a stream never opened is a violation.
      const known = frame.stream % 2 === 1 ? frame.stream < this.#nextHostId : frame.stream <= this.#lastGuestId;
      if (!known) throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `${frame.type} frame for stream ${frame.stream}, which was never opened` });
      return;
    }
    s.receive(frame);
  }
}
