/**
 * TCP termination: one `TcpFlow` per guest connection, between the guest (the remote endpoint) and a host
 * side (a HostConnector stream for guest-initiated flows, or the caller of `connectToGuest`).
 *
 * What this gets right that research/network.md (b) found missing in gondolin: sequence numbers modulo
 * 2^32 everywhere (seq.ts), MSS and window scaling both ways, a per-flow receive buffer whose free space
 * is the advertised window (a slow host reader closes that flow's window, never the NIC), retransmission
 * (RTO from RFC 6298 with Karn's rule, exponential backoff, fast retransmit on 3 duplicate ACKs), persist
 * probes on a zero window, FIN/RST both ways, half-open/idle/TIME_WAIT timeouts, bounded out-of-order
 * hold, and RFC 5961 blind-RST/SYN protection (challenge ACKs).
 */
import { ChunkQueue } from "./chunks.ts";
import { NetErrors } from "./errors.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqInWindow, seqLe, seqLt } from "./seq.ts";
import type { Timer, TimerWheel } from "./timers.ts";
import type { ByteStream, ByteStreamHandlers } from "./types.ts";
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, buildTcpFrame } from "./wire.ts";
import type { FrameAddressing, TcpHeaderFields, TcpSegment } from "./wire.ts";

export type TcpState =
  | "DIALING" // guest SYN received, host side connecting; no SYN-ACK yet (so a refused dial is an RST)
  | "SYN_SENT" // we sent SYN into the guest (connectToGuest)
  | "SYN_RCVD"
  | "ESTABLISHED"
  | "FIN_WAIT_1"
  | "FIN_WAIT_2"
  | "CLOSING"
  | "TIME_WAIT"
  | "CLOSE_WAIT"
  | "LAST_ACK"
  | "CLOSED";

export interface ResolvedTcpTunables {
  /** First retransmission timeout. */
  rtoInitialMs: number;
  rtoMinMs: number;
  rtoMaxMs: number;
  /** Retransmissions of one segment before the flow is reset. */
  maxRetransmits: number;
  /** DIALING/SYN_RCVD/SYN_SENT longer than this is dropped (RST). */
  handshakeTimeoutMs: number;
  /** No payload either way for this long: reset. */
  idleTimeoutMs: number;
  timeWaitMs: number;
  /** Per-flow buffer each way: guest->host bytes not yet taken by the host, host->guest bytes not yet acked. */
  flowBufferBytes: number;
  /** Out-of-order bytes held per flow (beyond that, out-of-order segments are dropped and re-requested). */
  maxOutOfOrderBytes: number;
}

export interface TcpEnv {
  readonly wheel: TimerWheel;
  readonly tun: ResolvedTcpTunables;
  /** Our MSS: MTU - 40. */
  readonly localMss: number;
  /** Window-scale shift we announce. */
  readonly localWscale: number;
  /** Sends a frame to the guest; false when the link is congested (then only control segments go out). */
  emit(frame: Buffer): void;
  /** True while the link toward the guest accepts data segments. */
  linkWritable(): boolean;
  /** The flow has data to send but the link is backed up: call trySend again when it drains. */
  waitForLink(flow: TcpFlow): void;
  /**
   * True (and the flow is remembered) while a batch is being processed: the flow's delivery to the host
   * and its ACK happen once, at the end (`flushBatch`).
   */
  deferAck(flow: TcpFlow): boolean;
  /** Free bytes in the stack-wide buffer budget. */
  globalFree(): number;
  /** The stack-wide buffer accounting. */
  account(delta: number): void;
  count(reason: string): void;
  /** The flow reached CLOSED: remove it from the table. */
  released(flow: TcpFlow): void;
  stateChanged(flow: TcpFlow, from: TcpState): void;
}

/** How the flow reaches its host side; two implementations below (connector stream, connectToGuest caller). */
interface HostSide {
  /** Hands guest bytes to the host; false = stop until `flow.hostWritable()`. */
  deliver(chunk: Buffer): boolean;
  /** The send queue has room again (after `hostData` returned false). */
  wantMore(): void;
  connected(): void;
  ended(): void;
  closed(error?: Error): void;
}

const SYN_ACK = TCP_SYN | TCP_ACK;
const INVALID_ACKS_PER_SECOND = 20;
const MAX_OOO_SEGMENTS = 64;

export class TcpFlow {
  state: TcpState;
  readonly env: TcpEnv;
  readonly addr: FrameAddressing;
  readonly localPort: number;
  readonly guestPort: number;
  readonly initiatedByGuest: boolean;
  readonly createdAt: number;

  // Send side (toward the guest).
  iss: number;
  sndUna: number;
  sndNxt: number;
  /** The highest sequence number sent (after an RTO, sndNxt goes back to sndUna and climbs again). */
  sndMax: number;
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  maxSndWnd = 0;
  /** Shift applied to the guest's window field (0 unless both SYNs carried window scale). */
  sndShift = 0;
  /** Shift we apply to the windows we advertise. */
  rcvShift = 0;
  /** The guest's SYN carried window scale (so ours does too). */
  wsOk = false;
  mss: number;
  cwnd = Infinity;
  readonly sendQ = new ChunkQueue();
  /** The host side ended: send FIN after the queue. */
  finQueued = false;
  /** The sequence number our FIN occupies (fixed once the host side ended: no data follows it). */
  finSeq: number | undefined;
  /** The FIN went out at least once. */
  finSent = false;
  /** Our FIN was acked in LAST_ACK but guest bytes still wait for the host: finish once delivered. */
  finishWhenDelivered = false;

  // Receive side (from the guest).
  irs = 0;
  rcvNxt = 0;
  /** The right edge of the window we last advertised; never moves left. */
  rcvAdvEdge = 0;
  readonly recvQ = new ChunkQueue();
  ooo: Array<{ seq: number; data: Buffer; fin: boolean }> = [];
  oooBytes = 0;
  guestFin = false;
  hostEndDelivered = false;
  /** The host side refused more bytes (deliver returned false). */
  hostBlocked = false;
  /** We told the host side to stop producing (its data filled the send queue). */
  hostThrottled = false;
  ackPending = false;

  // Timers and RTT.
  rto: number;
  srtt: number | undefined;
  rttvar = 0;
  rttSeq: number | undefined;
  rttStart = 0;
  retries = 0;
  dupAcks = 0;
  persistBackoff = 0;
  lastProgress: number;
  readonly rtoTimer: Timer;
  readonly persistTimer: Timer;
  readonly idleTimer: Timer;
  readonly handshakeTimer: Timer;

  bytesFromGuest = 0;
  bytesToGuest = 0;
  host: HostSide | undefined;
  closeError: Error | undefined;

  constructor(env: TcpEnv, addr: FrameAddressing, localPort: number, guestPort: number, iss: number, initiatedByGuest: boolean) {
    this.env = env;
    this.addr = addr;
    this.localPort = localPort;
    this.guestPort = guestPort;
    this.iss = iss >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.initiatedByGuest = initiatedByGuest;
    this.state = initiatedByGuest ? "DIALING" : "SYN_SENT";
    this.mss = 536;
    this.rto = env.tun.rtoInitialMs;
    const w = env.wheel;
    this.createdAt = w.clock.now();
    this.lastProgress = this.createdAt;
    this.rtoTimer = w.timer(() => this.#onRto());
    this.persistTimer = w.timer(() => this.#onPersist());
    this.idleTimer = w.timer(() => this.#onIdle());
    this.handshakeTimer = w.timer(() => this.#abort("tcp-handshake-timeout", timeoutError("handshake"), true));
    this.handshakeTimer.arm(env.tun.handshakeTimeoutMs);
    this.idleTimer.arm(env.tun.idleTimeoutMs);
  }

  #isClosed(): boolean {
    return this.state === "CLOSED";
  }

  get halfOpen(): boolean {
    return this.state === "DIALING" || this.state === "SYN_RCVD" || this.state === "SYN_SENT";
  }

  /** Bytes this flow holds in the stack's buffers. */
  get bufferedBytes(): number {
    return this.sendQ.length + this.recvQ.length + this.oooBytes;
  }

  // ------------------------------------------------------------------------------------ opening

  /** Guest-initiated: the SYN that created the flow (options recorded; SYN-ACK waits for the host side). */
  acceptSyn(seg: TcpSegment): void {
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.#takeSynOptions(seg);
    this.sndWnd = seg.window; // never scaled in a SYN (RFC 7323 §2.2)
    this.sndWl1 = seg.seq;
    this.maxSndWnd = this.sndWnd;
  }

  /** Attaches a connector stream as the host side (guest-initiated flows). */
  attachConnectorStream(open: (handlers: ByteStreamHandlers) => ByteStream): void {
    let stream: ByteStream | undefined;
    let early: Array<() => void> | undefined = [];
    // Handlers may run before `open` returns in a careless connector: queue them until the stream exists.
    const later = (f: () => void) => (early ? early.push(f) : f());
    const handlers: ByteStreamHandlers = {
      onConnect: () => later(() => this.hostConnected()),
      onData: (chunk) =>
        later(() => {
          if (!this.hostData(chunk)) stream?.pause();
        }),
      onDrain: () => later(() => this.hostWritable()),
      onEnd: () => later(() => this.hostEnd()),
      onClose: (error) => later(() => this.hostClosed(error)),
    };
    try {
      stream = open(handlers);
    } catch (e) {
      early = undefined;
      this.hostClosed(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const s = stream;
    this.host = {
      deliver: (chunk) => s.write(chunk),
      wantMore: () => s.resume(),
      connected: () => {},
      ended: () => s.end(),
      // A clean close needs nothing: both ends were exchanged, and the stream closes itself. Only an
      // abort destroys it (destroy would drop bytes the stream still buffers).
      closed: (error) => {
        if (error) s.destroy(error);
      },
    };
    const queued = early;
    early = undefined;
    for (const f of queued) f();
  }

  /** Stack-initiated (connectToGuest): sends the SYN and returns the caller's stream. */
  openToGuest(handlers: ByteStreamHandlers): ByteStream {
    let paused = false;
    this.host = {
      deliver: (chunk) => {
        handlers.onData(chunk);
        return !paused;
      },
      wantMore: () => handlers.onDrain(),
      connected: () => handlers.onConnect(),
      ended: () => handlers.onEnd(),
      closed: (error) => handlers.onClose(error),
    };
    this.#sendSyn();
    return {
      write: (chunk) => this.hostData(chunk),
      end: () => this.hostEnd(),
      destroy: (error) => this.hostClosed(error ?? new Error("destroyed by the host side")),
      pause: () => {
        paused = true;
      },
      resume: () => {
        if (!paused) return;
        paused = false;
        this.hostWritable();
      },
    };
  }

  // ---------------------------------------------------------------------- events from the host side

  /** The host side connected: answer the guest's SYN. */
  hostConnected(): void {
    if (this.state !== "DIALING") return;
    this.#setState("SYN_RCVD");
    this.#sendSynAck();
  }

  /** Bytes for the guest. Returns false when the send queue is full (the producer should pause). */
  hostData(chunk: Buffer): boolean {
    if (this.state === "CLOSED" || this.finQueued) return false;
    if (chunk.length > 0) {
      this.sendQ.push(chunk);
      this.env.account(chunk.length);
      this.trySend();
    }
    const full = this.sendQ.length >= this.env.tun.flowBufferBytes;
    if (full) this.hostThrottled = true;
    return !full;
  }

  /** The host side finished sending: FIN after the queued bytes. */
  hostEnd(): void {
    if (this.state === "CLOSED" || this.finQueued) return;
    this.finQueued = true;
    this.finSeq = seqAdd(this.sndUna, this.sendQ.length + (this.halfOpen ? 1 : 0));
    if (this.state === "DIALING") {
      // The host closed before we even answered the SYN: refuse.
      this.#abort("tcp-host-closed", undefined, true);
      return;
    }
    this.trySend();
  }

  /** The host side can take more guest bytes. */
  hostWritable(): void {
    if (this.state === "CLOSED") return;
    this.hostBlocked = false;
    this.#deliverToHost();
    if (!this.#isClosed()) this.trySend(); // carries the window update
  }

  /** The host side is gone (error = abort: RST the guest; no error after end: treat as end). */
  hostClosed(error?: Error): void {
    if (this.state === "CLOSED") return;
    if (!error && this.finQueued && this.hostEndDelivered) return; // both directions done; ACK of our FIN finishes
    if (!error) {
      this.hostEnd();
      return;
    }
    this.host = undefined;
    this.#abort(this.state === "DIALING" ? "tcp-host-refused" : "tcp-host-reset", undefined, true);
  }

  // ------------------------------------------------------------------------ segments from the guest

  onSegment(seg: TcpSegment, frame: Buffer): void {
    if (this.state === "CLOSED") return;
    const f = seg.flags;
    if (this.state === "SYN_SENT") return this.#onSegmentSynSent(seg);
    if (this.state === "DIALING") {
      // No SYN-ACK yet: only an exact RST (seq = irs + 1) cancels the dial; retransmitted SYNs wait.
      if (f & TCP_RST && seg.seq === this.rcvNxt) this.#abort("tcp-guest-reset", resetError(), false);
      return;
    }
    if (this.state === "SYN_RCVD" && f & TCP_SYN && !(f & TCP_ACK) && seg.seq === this.irs) {
      this.#sendSynAck(); // the guest missed our SYN-ACK
      return;
    }
    const payloadLen = seg.dataLen;
    const segLen = payloadLen + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
    const rcvWnd = this.#rcvWindowBytes();
    let acceptable: boolean;
    if (segLen === 0) acceptable = rcvWnd === 0 ? seg.seq === this.rcvNxt : seqInWindow(seg.seq, this.rcvNxt, rcvWnd);
    else
      acceptable =
        rcvWnd > 0 && (seqInWindow(seg.seq, this.rcvNxt, rcvWnd) || seqInWindow(seqAdd(seg.seq, segLen - 1), this.rcvNxt, rcvWnd));
    // A zero window still takes pure ACKs and FIN/RST at rcv.nxt (RFC 9293 §3.10.7.4 keeps ACK processing).
    if (!acceptable && rcvWnd === 0 && seg.seq === this.rcvNxt) acceptable = true;

    if (f & TCP_RST) {
      // RFC 5961 §3: only an RST at exactly rcv.nxt resets; one elsewhere in the window gets a challenge ACK.
      if (seg.seq === this.rcvNxt) this.#abort("tcp-guest-reset", resetError(), false);
      else if (seqInWindow(seg.seq, this.rcvNxt, Math.max(rcvWnd, 1))) {
        this.env.count("tcp-rst-challenged");
        this.#invalidAck();
      } else this.env.count("tcp-rst-out-of-window");
      return;
    }
    if (!acceptable) {
      this.env.count("tcp-out-of-window");
      this.#invalidAck();
      return;
    }
    if (f & TCP_SYN) {
      // RFC 5961 §4: a SYN on a synchronized connection gets a challenge ACK, never a reset.
      this.env.count("tcp-syn-challenged");
      this.#invalidAck();
      return;
    }
    if (!(f & TCP_ACK)) return;

    if (this.state === "SYN_RCVD") {
      if (!(seqGt(seg.ack, this.sndUna) && seqLe(seg.ack, this.sndMax))) {
        this.#sendRst(seg.ack, 0, TCP_RST);
        return;
      }
      // The ACK of our SYN: consume it here so the data accounting below never counts it.
      this.sndUna = seqAdd(this.iss, 1);
      if (seqLt(this.sndNxt, this.sndUna)) this.sndNxt = this.sndUna;
      this.rtoTimer.cancel();
      this.retries = 0;
      this.rto = this.env.tun.rtoInitialMs;
      this.handshakeTimer.cancel();
      this.#setState("ESTABLISHED");
    }

    if (!this.#processAck(seg)) return;
    if (this.#isClosed()) return;

    if (payloadLen > 0) {
      if (this.state === "ESTABLISHED" || this.state === "FIN_WAIT_1" || this.state === "FIN_WAIT_2")
        this.#acceptData(seg.seq, frame.subarray(seg.dataOff, seg.dataOff + payloadLen), (f & TCP_FIN) !== 0);
      else this.ackPending = true;
    } else if (f & TCP_FIN) {
      this.#acceptData(seg.seq, frame.subarray(0, 0), true);
    }
    if (this.env.deferAck(this)) return; // delivered and acked once per batch, in flushBatch
    this.#deliverToHost();
    this.trySend();
  }

  #onSegmentSynSent(seg: TcpSegment): void {
    const f = seg.flags;
    if (f & TCP_ACK && !(seqGt(seg.ack, this.iss) && seqLe(seg.ack, this.sndMax))) {
      if (!(f & TCP_RST)) this.#sendRst(seg.ack, 0, TCP_RST);
      return;
    }
    if (f & TCP_RST) {
      if (f & TCP_ACK) this.#abort("tcp-guest-refused", refusedError(this.guestPort), false);
      return;
    }
    if (!(f & TCP_SYN) || !(f & TCP_ACK)) return; // simultaneous open is not supported
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.#takeSynOptions(seg);
    this.sndUna = seg.ack;
    if (seqGt(this.sndUna, this.sndNxt)) this.sndNxt = this.sndUna;
    this.sndWnd = seg.window; // unscaled in a SYN
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
    this.maxSndWnd = this.sndWnd;
    this.rtoTimer.cancel();
    this.retries = 0;
    this.handshakeTimer.cancel();
    this.#setState("ESTABLISHED");
    this.#sendAck();
    this.host?.connected();
    this.trySend();
  }

  #takeSynOptions(seg: TcpSegment): void {
    const peerMss = seg.options.mss ?? 536; // RFC 9293 §3.7.1: no option means 536
    this.mss = Math.max(64, Math.min(peerMss, this.env.localMss));
    // Window scaling applies only when both SYNs carry the option (RFC 7323 §1.3).
    this.wsOk = seg.options.wscale !== undefined;
    this.sndShift = this.wsOk ? seg.options.wscale! : 0;
    this.rcvShift = this.wsOk ? this.env.localWscale : 0;
  }

  /** ACK processing (RFC 9293 §3.10.7.4). Returns false when the segment must be dropped. */
  #processAck(seg: TcpSegment): boolean {
    const ack = seg.ack;
    if (seqGt(ack, this.sndMax)) {
      // Acks something we never sent: answer with an ACK and drop (RFC 5961 §5).
      this.env.count("tcp-ack-unsent");
      this.#invalidAck();
      return false;
    }
    if (seqLt(ack, seqAdd(this.sndUna, -Math.max(this.maxSndWnd, 65535)))) {
      this.env.count("tcp-ack-too-old");
      this.#invalidAck();
      return false;
    }
    const wnd = seg.window << this.sndShift;
    if (seqGt(ack, this.sndUna)) {
      let acked = seqDiff(ack, this.sndUna);
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
      // The FIN occupies the sequence number after the last byte.
      const finAcked = this.finSeq !== undefined && this.finSent && seqGt(ack, this.finSeq);
      if (acked > this.sendQ.length) acked = this.sendQ.length;
      if (acked > 0) {
        this.sendQ.drop(acked);
        this.env.account(-acked);
        this.lastProgress = this.env.wheel.clock.now();
        if (this.cwnd !== Infinity) {
          this.cwnd += acked;
          if (this.cwnd >= 64 * this.mss) this.cwnd = Infinity;
        }
      }
      if (this.rttSeq !== undefined && seqGe(ack, this.rttSeq)) {
        this.#rttSample(this.env.wheel.clock.now() - this.rttStart);
        this.rttSeq = undefined;
      }
      this.retries = 0;
      this.dupAcks = 0;
      if (this.sndUna === this.sndMax) this.rtoTimer.cancel();
      else this.rtoTimer.arm(this.rto);
      if (this.hostThrottled && this.sendQ.length < this.env.tun.flowBufferBytes / 2) {
        this.hostThrottled = false;
        this.host?.wantMore();
      }
      if (finAcked) {
        if (this.state === "FIN_WAIT_1") this.#setState("FIN_WAIT_2");
        else if (this.state === "CLOSING") this.#enterTimeWait();
        else if (this.state === "LAST_ACK") {
          if (this.recvQ.length === 0 && (this.hostEndDelivered || !this.guestFin)) {
            this.#finish();
            return false;
          }
          this.finishWhenDelivered = true;
        }
      }
    } else if (ack === this.sndUna && seg.dataLen === 0 && !(seg.flags & TCP_FIN) && wnd === this.sndWnd && this.sndMax !== this.sndUna) {
      if (++this.dupAcks === 3) {
        this.env.count("tcp-fast-retransmit");
        this.#retransmitHead();
      }
    }
    // Window update (RFC 9293 §3.10.7.4: only from a segment at least as new as the last one used).
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      const opened = this.sndWnd === 0 && wnd > 0;
      this.sndWnd = wnd;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (wnd > this.maxSndWnd) this.maxSndWnd = wnd;
      if (opened) {
        this.persistTimer.cancel();
        this.persistBackoff = 0;
      }
    }
    return true;
  }

  #acceptData(seq: number, data: Buffer, fin: boolean): void {
    // Cut what we already have (duplicates, overlaps) and what lies beyond the advertised edge.
    let start = seq;
    let d = data;
    const dup = seqDiff(this.rcvNxt, start);
    if (dup > 0) {
      if (dup >= d.length) {
        // Entirely old: a duplicate. (A FIN at rcv.nxt still counts.)
        if (!(fin && seqAdd(start, d.length) === this.rcvNxt)) {
          if (d.length > 0) this.env.count("tcp-duplicate");
          this.ackPending = true;
          return;
        }
        d = d.subarray(d.length);
      } else d = d.subarray(dup);
      start = this.rcvNxt;
    }
    const room = seqDiff(this.rcvAdvEdge, start);
    if (room <= 0 && d.length > 0) {
      this.env.count("tcp-beyond-window");
      this.ackPending = true;
      return;
    }
    if (d.length > room) {
      d = d.subarray(0, room);
      fin = false;
    }
    if (start !== this.rcvNxt) {
      this.#holdOutOfOrder(start, d, fin);
      this.#sendAck(); // a duplicate ACK makes the guest fast-retransmit the hole
      return;
    }
    this.#appendInOrder(d, fin);
    while (this.ooo.length > 0) {
      const o = this.ooo[0]!;
      const gap = seqDiff(o.seq, this.rcvNxt);
      if (gap > 0) break;
      this.ooo.shift();
      this.oooBytes -= o.data.length;
      this.env.account(-o.data.length);
      const skip = -gap;
      if (skip < o.data.length) this.#appendInOrder(o.data.subarray(skip), o.fin);
      else if (o.fin && skip === o.data.length) this.#appendInOrder(o.data.subarray(0, 0), true);
    }
    this.ackPending = true;
  }

  #appendInOrder(d: Buffer, fin: boolean): void {
    if (this.guestFin) return;
    if (d.length > 0) {
      // Copy: the frame is a view into a large socket chunk we must not keep alive.
      this.recvQ.pushCopy(d);
      this.env.account(d.length);
      this.rcvNxt = seqAdd(this.rcvNxt, d.length);
      this.bytesFromGuest += d.length;
      this.lastProgress = this.env.wheel.clock.now();
    }
    if (fin) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.guestFin = true;
      if (this.state === "ESTABLISHED") this.#setState("CLOSE_WAIT");
      else if (this.state === "FIN_WAIT_1") {
        if (this.finSent && this.sndUna === this.sndMax) this.#enterTimeWait();
        else this.#setState("CLOSING");
      } else if (this.state === "FIN_WAIT_2") this.#enterTimeWait();
      this.ackPending = true;
    }
  }

  #holdOutOfOrder(seq: number, d: Buffer, fin: boolean): void {
    if (d.length === 0 && !fin) return;
    // Bounded in bytes and in pieces (a sorted insert into thousands of one-byte holds would be quadratic).
    if (this.oooBytes + d.length > this.env.tun.maxOutOfOrderBytes || this.ooo.length >= MAX_OOO_SEGMENTS) {
      this.env.count("tcp-ooo-dropped");
      return;
    }
    // Keep the list sorted by seq; an exact duplicate start is dropped.
    let i = this.ooo.length;
    while (i > 0 && seqGt(this.ooo[i - 1]!.seq, seq)) i--;
    if (i > 0 && this.ooo[i - 1]!.seq === seq && this.ooo[i - 1]!.data.length >= d.length) {
      this.env.count("tcp-duplicate");
      return;
    }
    const copy = Buffer.allocUnsafe(d.length);
    d.copy(copy);
    this.ooo.splice(i, 0, { seq, data: copy, fin });
    this.oooBytes += d.length;
    this.env.account(d.length);
    this.env.count("tcp-ooo-held");
  }

  #deliverToHost(): void {
    const h = this.host;
    if (h && (this.state !== "DIALING")) {
      while (this.recvQ.length > 0 && !this.hostBlocked) {
        const chunk = this.recvQ.take(64 * 1024);
        this.env.account(-chunk.length);
        if (!h.deliver(chunk)) this.hostBlocked = true;
        if (this.state === "CLOSED") return;
      }
      if (this.guestFin && this.recvQ.length === 0 && !this.hostEndDelivered) {
        this.hostEndDelivered = true;
        h.ended();
        if (this.state === "CLOSED") return;
        if (this.finishWhenDelivered) return this.#finish();
        if (this.state === "TIME_WAIT") this.#closeHost(undefined);
      }
    }
    // Open the window when the host took bytes: right edge moved by a useful amount, or it was closed.
    const edge = this.#computeEdge();
    const gain = seqDiff(edge, this.rcvAdvEdge);
    if (gain > 0 && (this.#rcvWindowBytes() === 0 || gain >= Math.min(this.mss, this.env.tun.flowBufferBytes / 2))) this.ackPending = true;
  }

  // ----------------------------------------------------------------------------- sending to the guest

  /** Sends what the guest's window, our queue and the link allow; then a pending ACK if nothing carried it. */
  trySend(): void {
    const st = this.state;
    if (st === "ESTABLISHED" || st === "CLOSE_WAIT" || st === "FIN_WAIT_1" || st === "CLOSING" || st === "LAST_ACK") {
      for (;;) {
        const inflight = seqDiff(this.sndNxt, this.sndUna);
        const avail = this.sendQ.length - inflight;
        if (avail <= 0) break;
        const wnd = Math.min(this.sndWnd, this.cwnd);
        const usable = wnd - inflight;
        if (usable <= 0) {
          if (this.sndWnd === 0 && this.sndMax === this.sndUna) this.persistTimer.ensure(this.#persistDelay());
          break;
        }
        if (!this.env.linkWritable()) {
          this.env.waitForLink(this);
          break;
        }
        const n = Math.min(avail, usable, this.mss);
        // Sender-side silly-window avoidance: hold a small tail while data is in flight.
        if (n < this.mss && n < avail && inflight > 0) break;
        this.#sendData(inflight, n, n === avail);
      }
      if (this.finQueued && this.sndNxt === this.finSeq) this.#sendFin();
    }
    if (this.ackPending && !this.env.deferAck(this)) this.#sendAck();
  }

  /** End of a receive batch: hand the batch's bytes to the host in one write, then send what is due and the ACK. */
  flushBatch(): void {
    if (this.state === "CLOSED") return;
    this.#deliverToHost();
    if (this.#isClosed()) return;
    this.trySend();
    if (this.ackPending && !this.#isClosed()) this.#sendAck();
  }

  #sendData(offset: number, n: number, push: boolean): void {
    const seq = this.sndNxt;
    const q = this.sendQ;
    const frame = this.#frame(seq, TCP_ACK | (push ? TCP_PSH : 0), n, (f, off) => q.copyOut(offset, n, f, off));
    const retransmit = seqLt(seq, this.sndMax);
    this.sndNxt = seqAdd(seq, n);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    if (!retransmit) {
      this.bytesToGuest += n;
      if (this.rttSeq === undefined) {
        this.rttSeq = this.sndNxt;
        this.rttStart = this.env.wheel.clock.now();
      }
    } else this.rttSeq = undefined; // Karn: never time a retransmission
    this.rtoTimer.ensure(this.rto);
    this.lastProgress = this.env.wheel.clock.now();
    this.env.emit(frame);
  }

  #sendFin(): void {
    const seq = this.finSeq!;
    this.finSent = true;
    this.sndNxt = seqAdd(seq, 1);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    if (this.state === "ESTABLISHED") this.#setState("FIN_WAIT_1");
    else if (this.state === "CLOSE_WAIT") this.#setState("LAST_ACK");
    this.rtoTimer.ensure(this.rto);
    this.env.emit(this.#frame(seq, TCP_FIN | TCP_ACK, 0));
  }

  #sendSyn(): void {
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.rtoTimer.ensure(this.rto);
    this.env.emit(this.#control(this.iss, 0, TCP_SYN, true));
  }

  #sendSynAck(): void {
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.rtoTimer.ensure(this.rto);
    this.env.emit(this.#control(this.iss, this.rcvNxt, SYN_ACK, true));
  }

  #sendAck(): void {
    this.ackPending = false;
    if (this.state === "CLOSED" || this.state === "DIALING" || this.state === "SYN_SENT") return;
    // A pure ACK carries the highest sequence sent (sndNxt may have gone back for a retransmission).
    this.env.emit(this.#frame(this.sndMax, TCP_ACK, 0));
  }

  #invalidAcks = 0;
  #invalidAckWindow = 0;

  /**
   * The ACK owed to an unacceptable segment or a challenge (RFC 9293 §3.10.7.4, RFC 5961), rate-limited
   * per flow (RFC 5961 §7): a guest that keeps sending out-of-window segments gets at most
   * INVALID_ACKS_PER_SECOND answers, so it can never start an ACK war.
   */
  #invalidAck(): void {
    const now = this.env.wheel.clock.now();
    if (now - this.#invalidAckWindow >= 1000) {
      this.#invalidAckWindow = now;
      this.#invalidAcks = 0;
    }
    if (++this.#invalidAcks > INVALID_ACKS_PER_SECOND) {
      this.env.count("tcp-invalid-ack-ratelimited");
      return;
    }
    this.#sendAck();
  }

  #sendRst(seq: number, ack: number, flags: number): void {
    this.env.emit(this.#control(seq, ack, flags, false));
  }

  /** Builds a segment with the current ACK and window (advancing the advertised edge). */
  #frame(seq: number, flags: number, payloadLen: number, fill?: (f: Buffer, off: number) => void): Buffer {
    this.ackPending = false;
    const edge = this.#computeEdge();
    if (seqGt(edge, this.rcvAdvEdge)) this.rcvAdvEdge = edge;
    const win = Math.min(0xffff, Math.floor(Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt)) / 2 ** this.rcvShift));
    const h: TcpHeaderFields = { srcPort: this.localPort, dstPort: this.guestPort, seq, ack: this.rcvNxt, flags, window: win };
    return buildTcpFrame(this.addr, h, payloadLen, fill);
  }

  #control(seq: number, ack: number, flags: number, synOptions: boolean): Buffer {
    const h: TcpHeaderFields = { srcPort: this.localPort, dstPort: this.guestPort, seq, ack, flags, window: 0 };
    if (synOptions) {
      const edge = this.#computeEdge();
      this.rcvAdvEdge = edge;
      // The window in a SYN is never scaled.
      h.window = Math.min(0xffff, Math.max(0, seqDiff(edge, this.rcvNxt)));
      h.mss = this.env.localMss;
      // Offer window scaling on our SYN; on a SYN-ACK only if the guest offered it.
      if (this.state === "SYN_SENT" || this.wsOk) h.wscale = this.env.localWscale;
    }
    return buildTcpFrame(this.addr, h, 0);
  }

  /** The right edge we could advertise now: rcv.nxt + free space (per flow and stack-wide), never left of the last one. */
  #computeEdge(): number {
    const tun = this.env.tun;
    const free = Math.max(0, Math.min(tun.flowBufferBytes - this.recvQ.length - this.oooBytes, this.env.globalFree()));
    const maxWin = 0xffff * 2 ** this.rcvShift;
    const edge = seqAdd(this.rcvNxt, Math.min(free, maxWin));
    return seqGt(edge, this.rcvAdvEdge) ? edge : this.rcvAdvEdge;
  }

  #rcvWindowBytes(): number {
    return Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
  }

  // ---------------------------------------------------------------------------------------- timers

  #onRto(): void {
    if (this.state === "CLOSED" || this.state === "TIME_WAIT") return;
    if (this.sndUna === this.sndMax) return;
    if (++this.retries > this.env.tun.maxRetransmits) {
      this.#abort("tcp-retransmit-timeout", timeoutError("retransmission"), true);
      return;
    }
    this.env.count("tcp-rto");
    this.rto = Math.min(this.rto * 2, this.env.tun.rtoMaxMs);
    this.rttSeq = undefined;
    if (this.state === "SYN_SENT") {
      this.env.emit(this.#control(this.iss, 0, TCP_SYN, true));
    } else if (this.state === "SYN_RCVD") {
      this.env.emit(this.#control(this.iss, this.rcvNxt, SYN_ACK, true));
    } else {
      // Go back to the oldest unacknowledged byte and restart from one segment (slow start);
      // trySend re-sends the FIN when it reaches finSeq.
      this.sndNxt = this.sndUna;
      this.cwnd = this.mss;
      this.trySend();
    }
    this.rtoTimer.arm(this.rto);
  }

  #retransmitHead(): void {
    const n = Math.min(this.mss, this.sendQ.length);
    if (n > 0 && this.env.linkWritable()) {
      const q = this.sendQ;
      this.rttSeq = undefined;
      this.env.emit(this.#frame(this.sndUna, TCP_ACK, n, (f, off) => q.copyOut(0, n, f, off)));
    } else if (this.finSent && this.sndUna === this.finSeq) this.env.emit(this.#frame(this.sndUna, TCP_FIN | TCP_ACK, 0));
    this.rtoTimer.arm(this.rto);
  }

  #persistDelay(): number {
    return Math.min(this.rto * 2 ** this.persistBackoff, this.env.tun.rtoMaxMs);
  }

  #onPersist(): void {
    if (this.state === "CLOSED" || this.sndWnd !== 0) return;
    if (seqDiff(this.sndNxt, this.sndUna) >= this.sendQ.length) return;
    // A window probe: an ACK one below snd.una, which the guest must answer with its current window.
    this.env.count("tcp-window-probe");
    this.env.emit(this.#frame(seqAdd(this.sndUna, -1), TCP_ACK, 0));
    this.persistBackoff = Math.min(this.persistBackoff + 1, 16);
    this.persistTimer.arm(this.#persistDelay());
  }

  #onIdle(): void {
    if (this.state === "CLOSED") return;
    const now = this.env.wheel.clock.now();
    const left = this.lastProgress + this.env.tun.idleTimeoutMs - now;
    if (left > 0) {
      this.idleTimer.arm(left);
      return;
    }
    this.#abort("tcp-idle-timeout", timeoutError("idle"), true);
  }

  #rttSample(ms: number): void {
    // RFC 6298 §2.
    if (this.srtt === undefined) {
      this.srtt = ms;
      this.rttvar = ms / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms);
      this.srtt = 0.875 * this.srtt + 0.125 * ms;
    }
    const tun = this.env.tun;
    this.rto = Math.min(tun.rtoMaxMs, Math.max(tun.rtoMinMs, this.srtt + Math.max(1, 4 * this.rttvar)));
  }

  // --------------------------------------------------------------------------------- state changes

  #setState(s: TcpState): void {
    const from = this.state;
    if (from === s) return;
    this.state = s;
    this.env.stateChanged(this, from);
  }

  #enterTimeWait(): void {
    this.rtoTimer.cancel();
    this.persistTimer.cancel();
    this.#setState("TIME_WAIT");
    // The host side closes once it has every guest byte (it may still be draining).
    if (this.hostEndDelivered) this.#closeHost(undefined);
    this.handshakeTimer.cancel();
    const tw = this.env.wheel.timer(() => {
      if (this.recvQ.length > 0) tw.arm(this.env.tun.timeWaitMs); // still draining into a slow host; the idle timer bounds it
      else this.#finish();
    });
    tw.arm(this.env.tun.timeWaitMs);
    this.#timeWait = tw;
  }

  #timeWait: Timer | undefined;

  /** Resets the guest side (optionally) and closes the host side with `error`. */
  #abort(reason: string, error: Error | undefined, rstGuest: boolean): void {
    if (this.state === "CLOSED") return;
    this.env.count(reason);
    if (rstGuest && this.state !== "TIME_WAIT") {
      if (this.state === "DIALING") this.#sendRst(0, this.rcvNxt, TCP_RST | TCP_ACK);
      else if (this.state === "SYN_SENT") this.#sendRst(this.sndNxt, 0, TCP_RST);
      // The guest (Linux follows RFC 5961) takes an RST only at exactly its rcv.nxt: snd.max unless
      // data was lost in flight; then its challenge ACK reaches no flow and gets an RST at its ACK number.
      else this.#sendRst(this.sndMax, this.rcvNxt, TCP_RST | TCP_ACK);
    }
    this.#closeHost(error ?? NetErrors.NET_CONNECTION_RESET({ message: `the flow was reset (${reason})` }));
    this.#finish();
  }

  /** Cuts the flow without sending anything to the guest (sever/close). */
  kill(error: Error): void {
    if (this.state === "CLOSED") return;
    this.#closeHost(error);
    this.#finish();
  }

  #closeHost(error: Error | undefined): void {
    const h = this.host;
    if (!h) return;
    this.host = undefined;
    this.closeError = error;
    h.closed(error);
  }

  #finish(): void {
    if (this.state === "CLOSED") return;
    this.#closeHost(undefined);
    this.#setState("CLOSED");
    this.rtoTimer.cancel();
    this.persistTimer.cancel();
    this.idleTimer.cancel();
    this.handshakeTimer.cancel();
    this.#timeWait?.cancel();
    const held = this.bufferedBytes;
    this.sendQ.clear();
    this.recvQ.clear();
    this.ooo = [];
    this.oooBytes = 0;
    this.env.account(-held);
    this.env.released(this);
  }
}

function resetError(): Error {
  return NetErrors.NET_CONNECTION_RESET({ message: "the guest reset the connection" });
}

function refusedError(port: number): Error {
  return NetErrors.NET_CONNECTION_REFUSED({ message: `the guest refused the connection to port ${port}`, details: { port } });
}

function timeoutError(phase: string): Error {
  return NetErrors.NET_TIMEOUT({ message: `the TCP ${phase} timeout expired`, details: { phase } });
}
