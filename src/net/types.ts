/**
 * The seams between the pure stack and the world: everything that touches a socket, a resolver or a
 * policy comes in through these interfaces, so `src/net/` stays frame-in, frame-out and testable without
 * a VM. The supervisor adapts `net.Socket`, `dgram` and the egress policy to them.
 */

/** Callbacks a byte stream's owner receives. None of them may be called synchronously from the call that returned the stream. */
export interface ByteStreamHandlers {
  /** The stream is connected and may carry data (for a HostConnector: the host socket connected). */
  onConnect(): void;
  /** Bytes from the other side. Apply backpressure with the stream's `pause()`, not by refusing. */
  onData(chunk: Buffer): void;
  /** A `write` that returned false may be followed by more writes now. */
  onDrain(): void;
  /** The other side finished sending (half-close); writes remain allowed until `end()`. */
  onEnd(): void;
  /** The stream is gone (after both ends, a reset, a refusal or a timeout); `error` is set unless it ended cleanly. */
  onClose(error?: Error): void;
}

/** A duplex byte stream with backpressure both ways, like a `net.Socket` reduced to what the stack needs. */
export interface ByteStream {
  /** Queues bytes; false means "stop until onDrain" (the bytes were still accepted). */
  write(chunk: Buffer): boolean;
  /** Half-close: no more writes. */
  end(): void;
  /** Abort both directions (a TCP reset toward the other side). */
  destroy(error?: Error): void;
  /** Stop delivering onData (backpressure toward the producer). */
  pause(): void;
  resume(): void;
}

export interface TcpTarget {
  /** The destination the guest dialled (dotted IPv4). The gateway address means "the host" (host.microagent.internal). */
  ip: string;
  port: number;
  /** The guest's source port (for audit records). */
  guestPort: number;
}

/** Opens the host side of a guest TCP flow (a host socket, or a mediator that speaks for one). */
export interface HostConnector {
  connect(target: TcpTarget, handlers: ByteStreamHandlers): ByteStream;
}

export interface UdpTarget {
  ip: string;
  port: number;
  guestPort: number;
}

export interface HostDatagramHandlers {
  /** A datagram from `from`. The stack forwards it only when `from` is the flow's peer. */
  onMessage(data: Buffer, from: { ip: string; port: number }): void;
  onError(error: Error): void;
}

/** The host side of one guest UDP flow (one connected-style socket per 5-tuple). */
export interface HostDatagram {
  send(data: Buffer): void;
  close(): void;
}

export interface HostDatagramFactory {
  open(target: UdpTarget, handlers: HostDatagramHandlers): HostDatagram;
}

export interface DestinationRequest {
  proto: "tcp" | "udp";
  /** Dotted IPv4 the guest addressed; equals the gateway for host.microagent.internal. */
  dstIp: string;
  dstPort: number;
  guestPort: number;
}

export type DestinationVerdict = { verdict: "allow" } | { verdict: "deny"; reason: string };

/**
 * Decides every new flow before anything touches the host. Synchronous, so a SYN is answered (RST) or
 * a datagram refused (ICMP) in the same turn. The default policy (public allowed, inside denied unless
 * explicitly allowed) lives in src/egress; the stack only calls the interface.
 */
export interface DestinationPolicy {
  decide(req: DestinationRequest): DestinationVerdict;
  /**
   * The stack refused a new flow for one of its own caps (flow count, half-open, buffer) before
   * asking `decide`: told so the refusal can be audited like any other (an RST or ICMP error the
   * guest gets with no record would hide a flood). `limit` is the cap's configured value.
   */
  capRefused?(req: DestinationRequest, cap: { reason: string; limit: number }): void;
}

export interface ResolverQueryInfo {
  /** The query name, lower-cased, without the trailing dot. */
  name: string;
  /** The numeric query type (1 A, 28 AAAA, 65 HTTPS, ...). */
  type: number;
}

/** Forwards a raw DNS query (as the guest sent it) upstream and returns the raw answer. */
export interface Resolver {
  query(raw: Buffer, info: ResolverQueryInfo): Promise<Buffer>;
}

export interface DnsQueryEvent extends ResolverQueryInfo {
  /** The address the guest sent the query to (the gateway, or another address: a foreign resolver). */
  target: string;
  transport: "udp" | "tcp";
}

/** What to do with a query that no local name answers. */
export type DnsQueryDecision = { action: "forward" } | { action: "refuse" } | { action: "nxdomain" };

/**
 * The hook for the egress layer's DNS policy: decide a query before forwarding it (strict mode refuses
 * names on no list), and see, rewrite or filter every upstream answer (pin A records, strip HTTPS/SVCB).
 */
export interface DnsObserver {
  onQuery?(q: DnsQueryEvent): DnsQueryDecision;
  /** Returns the answer to send to the guest (the same buffer, a rewritten one, or undefined to send SERVFAIL). */
  onAnswer?(q: DnsQueryEvent, answer: Buffer): Buffer | undefined;
}
