/**
 * TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4). Every comparison goes through these so a
 * flow that crosses 2^32 behaves like any other (the defect research/network.md (b) found in gondolin).
 */

/** a + n, wrapped to 32 bits. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** The signed distance a - b, in (-2^31, 2^31]. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** True when lo <= x < lo + len (modulo 2^32). */
export function seqInWindow(x: number, lo: number, len: number): boolean {
  const d = (x - lo) >>> 0;
  return d < len;
}
