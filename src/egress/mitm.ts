/**
 * TLS interception of one guest flow (research/network.md (c) piece 7). Order matters:
 *
 *  1. Upstream first: `tls.connect` over the verdict's address (the pinned IP the guest dialled),
 *     `servername` = the SNI, ALPN = the guest's offer restricted to http/1.1 (the one protocol we
 *     inspect), verified against the host's roots plus `--egress-upstream-ca`. A failure here is
 *     `egress_mitm_upstream_error` and an RST: a guest that sent SNI `allowed.test` to an attacker's
 *     address (case 2) meets a certificate that does not verify for the name, never a leaf of ours.
 *  2. Then the guest: `new tls.TLSSocket(guestDuplex, {isServer, secureContext})` with a leaf for the
 *     SNI from the workspace CA (one SecureContext per leaf, cached), its ALPN answered with what the
 *     upstream chose; the buffered ClientHello is replayed into it. A guest that rejects our leaf
 *     (pinning, its own store, mTLS) is `egress_mitm_handshake_error`, naming `--egress-passthrough`.
 *  3. Requests: the decrypted guest bytes go through `Http1Inspector` (Host == SNI, no DoH, strict
 *     framing) to the upstream; the upstream's bytes go back untouched.
 */
import { createSecureContext, connect as tlsConnect, TLSSocket } from "node:tls";
import type { SecureContext } from "node:tls";
import { EgressErrors } from "./errors.ts";
import { Http1Inspector, refusalResponse, swapHead } from "./http1-inspect.ts";
import { swapHeaders } from "../secrets/placeholder.ts";
import type { Refusal } from "./http1-inspect.ts";
import { normalizeHostname } from "./allow.ts";
import { guestDuplex, upstreamDuplex } from "./streams.ts";
import type { FlowFacts, Verdict } from "./policy.ts";
import type { MitmFlow as MediatedFlow } from "./mediator-types.ts";
import type { Leaf } from "./ca.ts";

const INSPECTED_ALPN = "http/1.1";

function contextFor(flow: MediatedFlow, leaf: Leaf): SecureContext {
  let ctx = flow.m.contexts.get(leaf);
  if (!ctx) {
    ctx = createSecureContext({ cert: leaf.chainPem, key: leaf.keyPem, minVersion: "TLSv1.2" });
    flow.m.contexts.set(leaf, ctx);
  }
  return ctx;
}

const upstreamContexts = new WeakMap<object, SecureContext>();

function upstreamContext(m: MediatedFlow["m"]): SecureContext {
  let ctx = upstreamContexts.get(m);
  if (!ctx) {
    ctx = createSecureContext({ ca: m.upstreamCa as string[], minVersion: "TLSv1.2" });
    upstreamContexts.set(m, ctx);
  }
  return ctx;
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException & { reason?: string };
  return `${err.code ? `${err.code}: ` : ""}${err.message ?? String(e)}`.slice(0, 300);
}

export function startMitm(flow: MediatedFlow, v: Verdict, f: FlowFacts, guestAlpn: readonly string[]): void {
  const m = flow.m;
  const dial = v.dial!;
  const sni = f.sni ? normalizeHostname(f.sni) : null;
  const leafName = sni ?? dial.ip;
  const base = { proto: "tcp" as const, dst: flow.dst, name: v.name, sni: f.sni ?? null, host: null, flowId: flow.id, mitm: true };
  let leaf: Leaf | null;
  try {
    leaf = m.issuer!.issue(leafName);
  } catch (e) {
    m.record({ ...base, type: "egress_mitm_handshake_error", decision: "deny", reason: `no certificate can be issued for '${leafName.slice(0, 80)}'`, signal: "malformed", error: errText(e) });
    return flow.abort(e as Error);
  }
  if (!leaf) {
    m.capRecord("tcp", flow.dst, "new TLS server names are signed at a bounded rate; this one was refused", 16, flow.id);
    return flow.abort(EgressErrors.EGRESS_CAP_EXCEEDED({ message: "too many new TLS server names per second" }));
  }
  const ctx = contextFor(flow, leaf);
  const upAlpn = guestAlpn.includes(INSPECTED_ALPN) ? [INSPECTED_ALPN] : [];

  // 1. upstream
  const raw = upstreamDuplex((h) => m.upstream.connect({ ip: dial.ip, port: dial.port, guestPort: flow.target.guestPort }, h));
  let up: TLSSocket | null = null;
  let upReady = false;
  let done = false;
  const timer = setTimeout(() => upFail(new Error(`no TLS handshake with ${dial.ip}:${dial.port} within ${m.upstreamTimeoutMs} ms`)), m.upstreamTimeoutMs);
  timer.unref();
  const cleanup = () => {
    clearTimeout(timer);
    up?.destroy();
    raw.destroy();
  };
  /** Set once the guest side exists: what to conclude if the guest resets the flow. */
  let onGuestReset: (() => void) | null = null;
  flow.onAbort(() => {
    done = true;
    onGuestReset?.();
    cleanup();
  });
  const upFail = (e: unknown) => {
    if (done || upReady) return;
    done = true;
    m.stats.upstreamErrors++;
    m.record({
      ...base,
      type: "egress_mitm_upstream_error",
      decision: "deny",
      reason: `the upstream ${dial.ip}:${dial.port} for ${sni ?? "(no SNI)"} failed before TLS was established; for a private CA add --egress-upstream-ca FILE, or --egress-passthrough ${sni ?? "HOST"} to forward the TLS untouched`,
      signal: v.signal,
      error: errText(e),
    });
    cleanup();
    flow.abort(EgressErrors.EGRESS_MITM_UPSTREAM_FAILED({ message: `upstream TLS to ${sni ?? dial.ip} failed: ${errText(e)}` }));
  };
  raw.once("error", upFail);
  // A TLS failure destroys the socket under it: let the TLS error (the better message) come first.
  raw.once("close", () => setImmediate(() => upFail(new Error("the upstream closed the connection"))));
  raw.once("connect", () => {
    if (done) return;
    up = tlsConnect({
      socket: raw,
      ...(sni ? { servername: sni } : {}),
      host: sni ?? dial.ip,
      ALPNProtocols: upAlpn,
      // One context for every upstream connection: parsing ~600 roots per connect cost ~60 ms.
      secureContext: upstreamContext(m),
      rejectUnauthorized: true,
    });
    up.once("error", upFail);
    up.once("secureConnect", () => {
      if (done) return;
      upReady = true;
      clearTimeout(timer);
      guestSide(up!);
    });
  });

  // 2. the guest
  const guestSide = (upTls: TLSSocket) => {
    const chosen = upTls.alpnProtocol || (guestAlpn.includes(INSPECTED_ALPN) ? INSPECTED_ALPN : null);
    const { duplex, stream } = guestDuplex(flow.gh);
    const gs = new TLSSocket(duplex, {
      isServer: true,
      secureContext: ctx,
      ...(guestAlpn.length > 0 ? { ALPNCallback: () => chosen ?? undefined } : {}),
    });
    let secure = false;
    let gotData = false;
    let reported = false;
    const handshakeError = (detail: string) => {
      if (reported) return;
      reported = true;
      m.stats.handshakeErrors++;
      m.record({
        ...base,
        type: "egress_mitm_handshake_error",
        decision: "deny",
        reason: `the guest rejected the workspace CA's certificate for ${leafName} (certificate pinning, its own trust store, or mTLS); if ${leafName} must not be intercepted, use --egress-passthrough ${sni ?? leafName}`,
        signal: v.signal,
        error: detail.slice(0, 300),
      });
    };
    const closeAll = (e?: Error) => {
      done = true;
      gs.destroy();
      upTls.destroy();
      raw.destroy();
      if (e) duplex.destroy(e);
    };
    gs.once("error", (e) => {
      if (!secure) handshakeError(errText(e));
      closeAll(EgressErrors.EGRESS_MITM_HANDSHAKE_FAILED({ message: `TLS with the guest failed: ${errText(e)}` }));
    });
    gs.on("data", () => {
      gotData = true;
    });
    onGuestReset = () => {
      if (!secure) handshakeError("the guest reset the connection during the TLS handshake");
      else if (!gotData) handshakeError("the guest reset the connection right after the handshake without sending a request");
      gs.destroy();
    };
    let upBroke = false;
    upTls.on("error", (e) => {
      upBroke = true;
      closeAll(e);
    });
    gs.once("secure", () => {
      secure = true;
      inspect(gs, upTls, chosen);
    });
    gs.once("close", () => {
      // Node's TLS client checks the chain after the handshake and then just closes (no alert): a
      // guest that leaves right after the handshake without a byte has, in practice, refused our leaf.
      if (!upBroke) {
        if (!secure) handshakeError("the guest closed the connection during the TLS handshake");
        else if (!gotData) handshakeError("the guest closed the connection right after the handshake without sending a request");
      }
      if (!upTls.destroyed) upTls.destroy();
      if (!duplex.destroyed) duplex.destroy();
    });
    flow.handOver(stream);
  };

  // 3. requests
  const inspect = (gs: TLSSocket, upTls: TLSSocket, alpn: string | null) => {
    const refuse = (r: Refusal) => {
      m.record({
        ...base,
        type: "egress_deny",
        host: r.host ?? null,
        ...(r.host && r.host !== sni ? { hostAsserted: r.host } : {}),
        decision: "deny",
        reason: `${r.status} for ${r.method ?? "a request"} ${r.target ?? ""}: ${r.reason}`.replace(/\s+/g, " "),
        signal: r.signal,
      });
      if (inspector.requests === 0) {
        upTls.unpipe(gs);
        upTls.destroy();
        gs.end(refusalResponse(r));
        return;
      }
      // Earlier requests on this connection were forwarded: let their responses finish, then answer
      // the refused one and close (pipelined requests are answered in order).
      // Without parsing responses we cannot tell when they are complete: wait until the upstream has
      // been quiet for a moment (bounded), then answer and close.
      upTls.unpipe(gs);
      let quiet: NodeJS.Timeout;
      const answer = () => {
        clearTimeout(quiet);
        upTls.destroy();
        if (!gs.writableEnded) gs.end(refusalResponse(r));
      };
      const rearm = () => {
        clearTimeout(quiet);
        quiet = setTimeout(answer, 300);
      };
      const cap = setTimeout(answer, 10_000);
      cap.unref();
      upTls.on("data", (c: Buffer) => {
        gs.write(c);
        rearm();
      });
      upTls.once("close", answer);
      upTls.resume(); // unpipe left it paused
      rearm();
    };
    // No ALPN and bytes that are not HTTP: another protocol over TLS (IMAPS, a database); the name was
    // proved by the SNI and the certificate, so the rest passes uninspected.
    const httpOnly = alpn === INSPECTED_ALPN;
    let first = true;
    let opaque = false;
    const forward = (b: Buffer) => {
      if (!upTls.write(b)) gs.pause();
    };
    // Swap secrets: only on a flow whose name was proved (v.name: SNI pinned to the address dialled),
    // never on the Host header the guest writes.
    const swapFor = m.swap.length > 0 && v.name ? v.name : null;
    const rewriteHead = swapFor
      ? (head: Buffer) =>
          swapHead(head, (pairs) => {
            const r = swapHeaders(pairs, m.swap, swapFor);
            // A value with a line break or NUL would add header lines (request smuggling): no swap at all.
            const unsafe = r.headers.some(([, v], j) => v !== pairs[j]?.[1] && /[\r\n\0]/.test(v));
            for (const e0 of r.events) {
              const ev = unsafe ? { ...e0, type: "secret_swap_denied" as const } : e0;
              m.record({
                type: ev.type,
                proto: "tcp",
                dst: flow.dst,
                name: v.name,
                sni: f.sni ?? null,
                host: ev.host,
                decision: ev.type === "secret_swap" ? "allow" : "deny",
                reason:
                  ev.type === "secret_swap"
                    ? `secret ${ev.name} swapped into ${ev.header} for ${ev.host}`
                    : unsafe
                      ? `a secret value with a line break or NUL cannot go in a header; the placeholders were sent as is`
                      : `secret ${ev.name} is not bound to ${ev.host}; its placeholder was sent as is`,
                signal: ev.type === "secret_swap" ? null : "denied",
                secret: ev.name,
                header: ev.header,
                flowId: flow.id,
              });
            }
            return { headers: r.headers, changed: !unsafe && r.events.some((e) => e.type === "secret_swap") };
          })
      : undefined;
    const inspector = new Http1Inspector({
      name: sni ?? "",
      forward,
      refuse,
      ...(rewriteHead ? { rewriteHead } : {}),
    });
    upTls.on("drain", () => gs.resume());
    gs.on("data", (c: Buffer) => {
      if (opaque) return forward(c);
      if (first && !httpOnly && !/^[A-Z]{3,10} /.test(c.subarray(0, 11).toString("latin1"))) {
        opaque = true;
        return forward(c);
      }
      first = false;
      if (!sni) return forward(c); // no SNI: an unnamed flow, nothing to compare a Host against
      inspector.feed(c);
    });
    gs.on("end", () => upTls.end());
    upTls.pipe(gs);
  };
}
