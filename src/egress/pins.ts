/**
 * The per-workspace DNS pin set: which addresses the mediator's resolver returned for which name.
 * A flow is attributed to name N only if its destination IP is pinned for N (DESIGN "dial what you
 * resolved"). Each pin lives for the answer's TTL clamped to 30-300 s (short TTLs would make a
 * connect right after the lookup miss its pin; long ones keep stale bindings), the set is bounded
 * (least recently pinned first out), and the clock is injectable for tests. Pure: no I/O.
 *
 * A flow keeps the verdict it got at connect time, so a pin that expires mid-flow cuts nothing.
 */
import { effectiveAddress, parseAddress } from "./address.ts";
import { normalizeHostname } from "./allow.ts";

export interface DnsPinsOptions {
  /** At most this many (name, ip) pins; the least recently pinned go first. */
  maxPins?: number;
  minTtlSeconds?: number;
  maxTtlSeconds?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
}

/** A DNS record as dns-packet decodes it (only the fields the pin set reads). */
export interface AnswerRecord {
  name: string;
  type: string;
  ttl?: number;
  data?: unknown;
}

interface Pin {
  name: string;
  ip: string;
  expiresAt: number;
}

/** CNAME hops followed from the name asked; a longer chain is not pinned past this depth. */
export const MAX_CNAME_CHAIN = 8;

export class DnsPins {
  readonly maxPins: number;
  readonly minTtlSeconds: number;
  readonly maxTtlSeconds: number;
  private readonly now: () => number;
  /** Insertion order is recency order: a re-pin moves the entry to the end. */
  private readonly pins = new Map<string, Pin>();
  private readonly byIp = new Map<string, Set<string>>();

  constructor(o: DnsPinsOptions = {}) {
    this.maxPins = o.maxPins ?? 4096;
    this.minTtlSeconds = o.minTtlSeconds ?? 30;
    this.maxTtlSeconds = o.maxTtlSeconds ?? 300;
    this.now = o.now ?? Date.now;
  }

  get size(): number {
    return this.pins.size;
  }

  /** The TTL a pin gets (and the most the guest should cache the answer for). */
  clampTtl(ttlSeconds: number | undefined): number {
    const t = Number.isFinite(ttlSeconds) ? (ttlSeconds as number) : this.minTtlSeconds;
    return Math.min(this.maxTtlSeconds, Math.max(this.minTtlSeconds, Math.floor(t)));
  }

  /** Pin `ip` to `name` for the clamped TTL. Returns false for an unusable name or address. */
  pin(name: string, ip: string, ttlSeconds?: number): boolean {
    const n = normalizeHostname(name);
    const a = parseAddress(ip);
    if (!n || !a) return false;
    const addr = effectiveAddress(a).text;
    const key = `${n} ${addr}`;
    this.pins.delete(key);
    this.pins.set(key, { name: n, ip: addr, expiresAt: this.now() + this.clampTtl(ttlSeconds) * 1000 });
    let names = this.byIp.get(addr);
    if (!names) this.byIp.set(addr, (names = new Set()));
    names.add(n);
    while (this.pins.size > this.maxPins) {
      const oldest = this.pins.keys().next().value as string;
      this.drop(oldest);
    }
    return true;
  }

  /**
   * Pin the A answers of a response to the name that was asked, following the CNAME chain from it
   * (records owned by names off the chain are ignored: the resolver answers for the question, not
   * for whatever else it appended). Returns the pins made.
   */
  record(qname: string, answers: readonly AnswerRecord[]): Array<{ name: string; ip: string; ttlSeconds: number }> {
    const asked = normalizeHostname(qname);
    if (!asked) return [];
    const chain = new Set([asked]);
    let cur = asked;
    for (let hop = 0; hop < MAX_CNAME_CHAIN; hop++) {
      const c = answers.find((r) => r.type === "CNAME" && normalizeHostname(r.name) === cur && typeof r.data === "string");
      if (!c) break;
      const next = normalizeHostname(c.data as string);
      if (!next || chain.has(next)) break;
      chain.add(next);
      cur = next;
    }
    const out: Array<{ name: string; ip: string; ttlSeconds: number }> = [];
    for (const r of answers) {
      if (r.type !== "A" || typeof r.data !== "string") continue;
      const owner = normalizeHostname(r.name);
      if (!owner || !chain.has(owner)) continue;
      if (this.pin(asked, r.data, r.ttl)) out.push({ name: asked, ip: effectiveAddress(parseAddress(r.data)!).text, ttlSeconds: this.clampTtl(r.ttl) });
    }
    return out;
  }

  /** The names `ip` is currently pinned for (any spelling of the address). */
  namesFor(ip: string): string[] {
    const a = parseAddress(ip);
    if (!a) return [];
    const addr = effectiveAddress(a).text;
    const names = this.byIp.get(addr);
    if (!names) return [];
    const now = this.now();
    const out: string[] = [];
    for (const n of [...names]) {
      const key = `${n} ${addr}`;
      const p = this.pins.get(key);
      if (!p || p.expiresAt <= now) this.drop(key);
      else out.push(n);
    }
    return out;
  }

  isPinned(name: string, ip: string): boolean {
    const n = normalizeHostname(name);
    return n !== null && this.namesFor(ip).includes(n);
  }

  clear(): void {
    this.pins.clear();
    this.byIp.clear();
  }

  private drop(key: string): void {
    const p = this.pins.get(key);
    this.pins.delete(key);
    const [name, ip] = p ? [p.name, p.ip] : (key.split(" ") as [string, string]);
    const names = this.byIp.get(ip);
    if (names) {
      names.delete(name);
      if (names.size === 0) this.byIp.delete(ip);
    }
  }
}
