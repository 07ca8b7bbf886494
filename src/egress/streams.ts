/**
 * Adapters between the network stack's `ByteStream` seam (write/end/destroy/pause/resume, with
 * `ByteStreamHandlers` callbacks) and Node streams, with backpressure both ways, so the mediator can
 * run `tls.TLSSocket` on a guest flow and `tls.connect({socket})` on an upstream flow. Also a plain
 * `HostConnector` over `node:net` that dials exactly the address it is given (the mediator has
 * already decided what that is: "dial what you resolved").
 */
import { Duplex } from "node:stream";
import { connect as netConnect } from "node:net";
import type { ByteStream, ByteStreamHandlers, HostConnector, TcpTarget } from "../net/types.ts";

/**
 * The guest side of a flow as a Node Duplex. The stack holds the returned `stream` (it writes guest
 * bytes into it and pauses/resumes it); `duplex` is what a TLS server or parser reads and writes.
 *  - guest -> us: `stream.write` pushes into the readable side; false when Node's buffer is full,
 *    then `handlers.onDrain()` once the consumer reads again.
 *  - us -> guest: `_write` calls `handlers.onData`; a `pause()` from the stack (its per-flow send
 *    queue is full) holds the write callback until `resume()`.
 */
export function guestDuplex(h: ByteStreamHandlers): { duplex: Duplex; stream: ByteStream } {
  let paused = false;
  let heldCb: ((e?: Error | null) => void) | null = null;
  let wantDrain = false;
  let closed = false;
  let endedToGuest = false;
  let endedFromGuest = false;
  const finish = (err?: Error) => {
    if (closed) return;
    closed = true;
    h.onClose(err);
  };
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (wantDrain) {
        wantDrain = false;
        if (!closed) h.onDrain();
      }
    },
    write(chunk: Buffer, _enc, cb) {
      if (closed) return cb(new Error("the guest flow is closed"));
      h.onData(chunk);
      if (paused) heldCb = cb;
      else cb();
    },
    final(cb) {
      endedToGuest = true;
      if (!closed) h.onEnd();
      cb();
      if (endedFromGuest) finish();
    },
    destroy(err, cb) {
      // An error (or a destroy before both ends) is an abort: the guest sees an RST.
      if (!(endedToGuest && endedFromGuest)) finish(err ?? new Error("the mediator closed the flow"));
      else finish();
      cb(null);
    },
  });
  const stream: ByteStream = {
    write(chunk) {
      if (closed || endedFromGuest) return false;
      const ok = duplex.push(chunk);
      if (!ok) wantDrain = true;
      return ok;
    },
    end() {
      if (endedFromGuest) return;
      endedFromGuest = true;
      duplex.push(null);
      if (endedToGuest) finish();
    },
    destroy(error) {
      closed = true; // the stack is gone: never call its handlers again
      duplex.destroy(error);
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      const cb = heldCb;
      heldCb = null;
      cb?.();
    },
  };
  return { duplex, stream };
}

/**
 * An upstream ByteStream (from a HostConnector) as a Node Duplex: what `tls.connect({socket})`
 * runs over. 'connect' is emitted when the connector reports the connection.
 */
export function upstreamDuplex(open: (h: ByteStreamHandlers) => ByteStream): Duplex {
  let heldCb: ((e?: Error | null) => void) | null = null;
  let paused = false;
  let gone = false;
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (paused) {
        paused = false;
        s?.resume();
      }
    },
    write(chunk: Buffer, _enc, cb) {
      if (!s || gone) return cb(new Error("the upstream connection is closed"));
      if (s.write(chunk)) cb();
      else heldCb = cb;
    },
    final(cb) {
      s?.end();
      cb();
    },
    destroy(err, cb) {
      if (!gone) {
        gone = true;
        s?.destroy(err ?? undefined);
      }
      cb(err);
    },
  });
  const s: ByteStream = open({
    onConnect: () => duplex.emit("connect"),
    onData: (chunk) => {
      if (!duplex.push(chunk) && !paused) {
        paused = true;
        s?.pause();
      }
    },
    onDrain: () => {
      const cb = heldCb;
      heldCb = null;
      cb?.();
    },
    onEnd: () => duplex.push(null),
    onClose: (error) => {
      gone = true;
      if (error) duplex.destroy(error);
      else if (!duplex.destroyed) {
        duplex.push(null);
        duplex.end();
      }
    },
  });
  return duplex;
}

/**
 * A HostConnector over node:net that dials exactly `{ip, port}` (the mediator's decision, already
 * mapped: host-service flows arrive as 127.0.0.1:PORT). Handlers never run inside `connect`.
 */
export function netConnector(o: { connectTimeoutMs?: number } = {}): HostConnector {
  return {
    connect(target: TcpTarget, h: ByteStreamHandlers): ByteStream {
      const sock = netConnect({ host: target.ip, port: target.port, allowHalfOpen: true, noDelay: true });
      let error: Error | undefined;
      const timer = setTimeout(() => sock.destroy(new Error(`connect to ${target.ip}:${target.port} timed out`)), o.connectTimeoutMs ?? 10_000);
      timer.unref();
      sock.on("connect", () => {
        clearTimeout(timer);
        h.onConnect();
      });
      sock.on("data", (d: Buffer) => h.onData(d));
      sock.on("drain", () => h.onDrain());
      sock.on("end", () => h.onEnd());
      sock.on("error", (e) => (error = e));
      sock.on("close", () => {
        clearTimeout(timer);
        h.onClose(error);
      });
      return {
        write: (b) => sock.write(b),
        end: () => sock.end(),
        destroy: (e) => sock.destroy(e),
        pause: () => sock.pause(),
        resume: () => sock.resume(),
      };
    },
  };
}
