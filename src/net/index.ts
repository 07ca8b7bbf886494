/**
 * The userspace network stack's public surface (for the supervisor's wiring and for tests): the
 * facade, its options, the host-side interfaces it is driven through, and the framing codec.
 */
export { NetworkStack } from "./stack.ts";
export type { FlowInfo, NetworkStackDeps, NetworkStats } from "./stack.ts";
export { DEFAULT_CAPS, DEFAULT_TCP, MAX_MTU, MIN_MTU, resolveNetworkOptions } from "./config.ts";
export type { NetworkCaps, NetworkStackOptions, ResolvedNetworkStackOptions } from "./config.ts";
export { MAX_STREAM_FRAME_BYTES, STREAM_HEADER_BYTES, StreamFrameDecoder, encodeStreamFrame, streamFrameHeader } from "./framing.ts";
export { ManualClock, TimerWheel, systemClock } from "./timers.ts";
export type { NetClock } from "./timers.ts";
export { HOST_ALIAS, validateDnsQuery } from "./dns.ts";
export { NetErrors } from "./errors.ts";
export { formatIpv4, parseIpv4 } from "./addr.ts";
export type { TcpState } from "./tcp.ts";
export type {
  ByteStream,
  ByteStreamHandlers,
  DestinationPolicy,
  DestinationRequest,
  DestinationVerdict,
  DnsObserver,
  DnsQueryDecision,
  DnsQueryEvent,
  HostConnector,
  HostDatagram,
  HostDatagramFactory,
  HostDatagramHandlers,
  Resolver,
  ResolverQueryInfo,
  TcpTarget,
  UdpTarget,
} from "./types.ts";
