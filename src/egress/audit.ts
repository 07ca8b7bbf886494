/**
 * The egress audit log: one host-only, append-only JSON Lines file per workspace (`egress.jsonl`,
 * 0600), bounded and rotated (4 MiB x 2 files by default), read back by `microagent egress NAME`.
 *
 * A hostile guest controls how many denies happen, so denies are coalesced: a deny identical to one
 * already seen in the current 1 s window only bumps that record's `count`, and a window holds at
 * most `maxDistinctDenies` distinct deny records, the rest folding into one overflow record per
 * window. 10^6 denies therefore cost a few hundred bytes per second of flood, not 10^6 lines.
 * Allows and closes are written at once (one line per flow, and flows are capped).
 *
 * Lines are written with one write(2) each on an O_APPEND descriptor, so a crash leaves at most a
 * torn last line, which the reader skips. A coalesced record carries its first `time` and its
 * `lastTime`; it is written when its window closes, so file order is not time order and the reader
 * sorts (stably) by `time`.
 */
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync, chmodSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { EgressErrors } from "./errors.ts";
import { SIGNALS, type FlowFacts, type Verdict } from "./policy.ts";
import { effectiveAddress, parseAddress } from "./address.ts";
import type { DnsQueryDecision } from "./dns-policy.ts";
import { isErrno } from "../util/fs.ts";

export const EGRESS_LOG = "egress.jsonl";

export const EGRESS_RECORD_TYPES = [
  "egress_allow",
  "egress_deny",
  "egress_close",
  "egress_dns_allow",
  "egress_dns_deny",
  "egress_udp_allow",
  "egress_udp_deny",
  "egress_mitm_handshake_error",
  "egress_mitm_upstream_error",
  "egress_cap_exceeded",
  "secret_swap",
  "secret_swap_denied",
] as const;
export type EgressRecordType = (typeof EGRESS_RECORD_TYPES)[number];

export const EgressRecordSchema = z.object({
  type: z.enum(EGRESS_RECORD_TYPES),
  /** ISO-8601 time of the event (of the first one, for a coalesced record). */
  time: z.string(),
  workspace: z.string(),
  proto: z.enum(["tcp", "udp", "dns"]),
  /** The destination as dialled (or asked for): `ip:port`, `[v6]:port`. */
  dst: z.string().nullable(),
  /** The name the flow proved (SNI/Host pinned to dst, or the DNS question); null when unnamed. */
  name: z.string().nullable(),
  sni: z.string().nullable().optional(),
  host: z.string().nullable().optional(),
  /** What the guest claimed without proving it. */
  hostAsserted: z.string().nullable().optional(),
  decision: z.enum(["allow", "deny"]),
  reason: z.string(),
  signal: z.enum(SIGNALS).nullable(),
  mitm: z.boolean().optional(),
  passthrough: z.boolean().optional(),
  unlisted: z.boolean().optional(),
  /** DNS records: the query type and the addresses answered. */
  qtype: z.string().optional(),
  answers: z.array(z.string()).optional(),
  /** The flow this record belongs to (allow, close and errors share it). */
  flowId: z.string().optional(),
  bytesUp: z.number().int().nonnegative().optional(),
  bytesDown: z.number().int().nonnegative().optional(),
  durationMs: z.number().nonnegative().optional(),
  /** Error text of a TLS or upstream failure (never key material). */
  error: z.string().optional(),
  /** Which cap was hit and its value. */
  limit: z.number().optional(),
  /** secret_swap / secret_swap_denied: the secret's name and the header it was in (never its value or token). */
  secret: z.string().optional(),
  header: z.string().optional(),
  /** Identical events folded into this record (absent: 1). */
  count: z.number().int().positive().optional(),
  lastTime: z.string().optional(),
});
export type EgressRecord = z.infer<typeof EgressRecordSchema>;

/** `ip:port`, or `[v6]:port`, with the address in its canonical (normalized) spelling. */
export function formatDst(ip: string, port: number): string {
  const a = parseAddress(ip);
  const text = a ? effectiveAddress(a).text : ip.slice(0, 64);
  return text.includes(":") ? `[${text}]:${port}` : `${text}:${port}`;
}

/**
 * The audit record for a flow verdict: `egress_allow`/`egress_deny` for TCP,
 * `egress_udp_allow`/`egress_udp_deny` for UDP, with what was proved (`name`) apart from what was
 * seen (`sni`, `host`) and what was only claimed (`hostAsserted`).
 */
export function verdictRecord(v: Verdict, f: FlowFacts, extra: { flowId?: string } = {}): Omit<EgressRecord, "time" | "workspace"> {
  const udp = f.proto === "udp";
  return {
    type: v.verdict === "allow" ? (udp ? "egress_udp_allow" : "egress_allow") : udp ? "egress_udp_deny" : "egress_deny",
    proto: f.proto,
    dst: formatDst(f.dstIp, f.dstPort),
    name: v.name,
    sni: f.sni ?? null,
    host: f.host ?? null,
    ...(v.asserted !== null ? { hostAsserted: v.asserted } : {}),
    decision: v.verdict,
    reason: v.reason,
    signal: v.signal,
    ...(v.verdict === "allow" ? { mitm: v.mitm, passthrough: v.passthrough, unlisted: v.unlisted } : {}),
    ...(extra.flowId ? { flowId: extra.flowId } : {}),
  };
}

/** The audit record for a DNS decision (`answers`: the addresses the guest got, once known). */
export function dnsRecord(d: DnsQueryDecision, ctx: { dstIp: string; proto: "tcp" | "udp" }, answers?: readonly string[]): Omit<EgressRecord, "time" | "workspace"> {
  const addrs = answers ?? (d.action === "answer" ? d.addresses : undefined);
  return {
    type: d.record,
    proto: "dns",
    dst: formatDst(ctx.dstIp, 53),
    name: d.qname,
    ...(d.qtype !== null ? { qtype: d.qtype } : {}),
    ...(addrs ? { answers: [...addrs] } : {}),
    decision: d.record === "egress_dns_allow" ? "allow" : "deny",
    reason: d.action === "reject" ? `${d.rcode}: ${d.reason}` : d.reason,
    signal: d.signal,
  };
}

export interface EgressAuditOptions {
  workspace: string;
  /** Rotate when the current file would pass this size. */
  maxFileBytes?: number;
  /** Files kept in all, the current one included (`egress.jsonl`, `egress.jsonl.1`, ...). */
  maxFiles?: number;
  coalesceWindowMs?: number;
  /** Distinct deny records per window; further denies fold into one overflow record. */
  maxDistinctDenies?: number;
  now?: () => number;
  /**
   * Called when a held deny fails to reach the disk from the coalescing timer (writes from
   * `write()` throw instead). The supervisor should treat it as the mediator failing: fail closed.
   */
  onError?: (e: Error) => void;
}

interface Pending {
  record: EgressRecord;
  count: number;
  lastAt: number;
}

const OVERFLOW_KEY = "\u0000overflow";

function denyKey(r: EgressRecord): string {
  return [r.type, r.proto, r.dst, r.name, r.sni, r.host, r.hostAsserted, r.reason, r.signal, r.qtype].map((v) => v ?? "").join("\u0001");
}

/** Appends records to `<dir>/egress.jsonl`. Synchronous writes keep order and survive our own crash. */
export class EgressAuditLog {
  readonly path: string;
  private fd: number;
  private size: number;
  private readonly o: Required<Omit<EgressAuditOptions, "now" | "onError">> & { now: () => number; onError: ((e: Error) => void) | undefined };
  private windowStart = -1;
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Records written, denies folded, bytes written (for status and tests). */
  readonly stats = { written: 0, coalesced: 0, rotations: 0, backgroundErrors: 0 };

  constructor(dir: string, o: EgressAuditOptions) {
    this.path = join(dir, EGRESS_LOG);
    this.o = {
      workspace: o.workspace,
      maxFileBytes: o.maxFileBytes ?? 4 * 1024 * 1024,
      maxFiles: Math.max(1, o.maxFiles ?? 2),
      coalesceWindowMs: o.coalesceWindowMs ?? 1000,
      maxDistinctDenies: o.maxDistinctDenies ?? 32,
      now: o.now ?? Date.now,
      onError: o.onError,
    };
    try {
      this.fd = openSync(this.path, "a", 0o600);
      chmodSync(this.path, 0o600);
      this.size = fstatSync(this.fd).size;
    } catch (e) {
      throw EgressErrors.EGRESS_AUDIT_WRITE_FAILED({ message: `cannot open ${this.path}: ${(e as Error).message}`, cause: e, details: { path: this.path } });
    }
  }

  /**
   * Record one event. `time` and `workspace` are filled in when absent. Denies may be held for up
   * to one coalescing window; everything else is on disk when this returns.
   */
  write(input: Omit<EgressRecord, "time" | "workspace"> & { time?: string; workspace?: string }): void {
    if (this.closed) return;
    const at = this.o.now();
    if (this.windowStart >= 0 && at - this.windowStart >= this.o.coalesceWindowMs) this.flushPending();
    const full = { ...input, time: input.time ?? new Date(at).toISOString(), workspace: input.workspace ?? this.o.workspace };
    if (input.decision !== "deny") {
      this.append(EgressRecordSchema.parse(full));
      return;
    }
    // A repeat is recognized before validation: a flood costs a map lookup per deny.
    const key = denyKey(full as EgressRecord);
    const p = this.pending.get(key);
    if (p) {
      p.count++;
      p.lastAt = at;
      this.stats.coalesced++;
      return;
    }
    // A full window with its overflow record already held: count, without validating (a flood of
    // distinct denies must cost no more than a repeat).
    const held = this.pending.get(OVERFLOW_KEY);
    if (held && this.pending.size > this.o.maxDistinctDenies) {
      held.count++;
      held.lastAt = at;
      this.stats.coalesced++;
      return;
    }
    const record = EgressRecordSchema.parse(full);
    if (this.windowStart < 0) {
      this.windowStart = at;
      this.armTimer();
    }
    if (this.pending.size < this.o.maxDistinctDenies) {
      this.pending.set(key, { record, count: 1, lastAt: at });
      return;
    }
    const over = this.pending.get(OVERFLOW_KEY);
    if (over) {
      over.count++;
      over.lastAt = at;
      this.stats.coalesced++;
      return;
    }
    this.pending.set(OVERFLOW_KEY, {
      record: { ...record, dst: null, name: null, sni: null, host: null, hostAsserted: null, signal: "denied", reason: `more than ${this.o.maxDistinctDenies} distinct denies in ${this.o.coalesceWindowMs} ms; the rest are counted here` },
      count: 1,
      lastAt: at,
    });
  }

  /** Write every held deny now (at shutdown, and when a window closes). */
  flushPending(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.windowStart = -1;
    if (this.pending.size === 0) return;
    const held = [...this.pending.values()];
    this.pending.clear();
    for (const p of held) {
      this.append(p.count > 1 ? { ...p.record, count: p.count, lastTime: new Date(p.lastAt).toISOString() } : p.record);
    }
  }

  close(): void {
    if (this.closed) return;
    this.flushPending();
    this.closed = true;
    closeSync(this.fd);
  }

  private armTimer(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.closed) return;
      try {
        this.flushPending();
      } catch (e) {
        // Never an uncaught exception from a timer: report it to the owner, who fails closed.
        this.stats.backgroundErrors++;
        this.o.onError?.(e as Error);
      }
    }, this.o.coalesceWindowMs);
    this.timer.unref();
  }

  private append(r: EgressRecord): void {
    const line = Buffer.from(`${JSON.stringify(r)}\n`, "utf8");
    try {
      if (this.size > 0 && this.size + line.length > this.o.maxFileBytes) this.rotate();
      writeSync(this.fd, line);
    } catch (e) {
      throw EgressErrors.EGRESS_AUDIT_WRITE_FAILED({ message: `cannot write ${this.path}: ${(e as Error).message}`, cause: e, details: { path: this.path } });
    }
    this.size += line.length;
    this.stats.written++;
  }

  private rotate(): void {
    closeSync(this.fd);
    try {
      const n = this.o.maxFiles;
      if (n === 1) {
        rmSync(this.path, { force: true });
      } else {
        rmSync(`${this.path}.${n - 1}`, { force: true });
        for (let i = n - 2; i >= 1; i--) {
          try {
            renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
          } catch (e) {
            if (!isErrno(e, "ENOENT")) throw e;
          }
        }
        renameSync(this.path, `${this.path}.1`);
      }
    } finally {
      // Whatever failed, keep a descriptor on the current name so close() and later writes work
      // (they will try to rotate again and report again).
      this.fd = openSync(this.path, "a", 0o600);
      this.size = fstatSync(this.fd).size;
    }
    this.stats.rotations++;
  }
}

/** Parse one file's complete lines; a torn last line (no newline) is skipped. */
export function parseEgress(text: string, source = EGRESS_LOG): EgressRecord[] {
  const out: EgressRecord[] = [];
  const end = text.lastIndexOf("\n");
  if (end < 0) return out;
  const lines = text.slice(0, end).split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      throw EgressErrors.EGRESS_AUDIT_CORRUPT({ message: `${source} line ${i + 1} is not JSON`, cause: e, details: { path: source, line: i + 1 } });
    }
    const r = EgressRecordSchema.safeParse(parsed);
    if (!r.success) {
      throw EgressErrors.EGRESS_AUDIT_CORRUPT({
        message: `${source} line ${i + 1} is not an egress record: ${r.error.issues[0]?.message ?? "invalid"}`,
        details: { path: source, line: i + 1 },
      });
    }
    out.push(r.data);
  }
  return out;
}

/**
 * Every record in `<dir>`, oldest first: the rotated files (highest number first), then the current
 * one, sorted stably by `time`. A missing log is an empty list.
 */
export async function readEgress(dir: string, o: { maxFiles?: number } = {}): Promise<EgressRecord[]> {
  const base = join(dir, EGRESS_LOG);
  const files: string[] = [];
  for (let i = Math.max(1, o.maxFiles ?? 16) - 1; i >= 1; i--) files.push(`${base}.${i}`);
  files.push(base);
  const all: EgressRecord[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = await readFile(f, "utf8");
    } catch (e) {
      if (isErrno(e, "ENOENT")) continue;
      throw EgressErrors.EGRESS_AUDIT_CORRUPT({ message: `cannot read ${f}: ${(e as Error).message}`, cause: e, details: { path: f } });
    }
    all.push(...parseEgress(text, f));
  }
  // ISO-8601 UTC strings sort as times; Array.prototype.sort is stable.
  return all.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
}
