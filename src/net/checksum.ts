/**
 * The Internet checksum (RFC 1071). The hot loop sums 32-bit little-endian words through a Uint32Array
 * view: one's-complement addition is byte-order independent, so a sum of LE words is the byte-swapped BE
 * sum. research/network.md (c) measured this at 18-26 Gbit/s against about 2 for a readUInt16BE loop.
 * There is no vnet header on `-netdev stream`, so the guest never offloads checksums: we verify all of them.
 */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Below this many bytes a scalar loop beats creating a typed-array view. */
const VIEW_THRESHOLD = 64;

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/**
 * The unfolded one's-complement sum of `len` bytes of `buf` from `off`, as big-endian 16-bit words
 * (an odd trailing byte is padded with zero). Add sums of pieces that start at even offsets of the
 * checksummed data; fold with `finishChecksum`.
 */
export function sum16(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  let i = off;
  const end = off + len;
  if (len >= VIEW_THRESHOLD && LITTLE_ENDIAN) {
    const lead = (4 - ((buf.byteOffset + i) & 3)) & 3;
    for (let k = 0; k < lead; k++) s += (k & 1) === 0 ? buf[i + k]! << 8 : buf[i + k]!;
    i += lead;
    const words = (end - i) >>> 2;
    const u32 = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    let a = 0;
    let b = 0;
    for (let j = 0; j < words; j++) {
      const w = u32[j]!;
      a += w & 0xffff;
      b += w >>> 16;
    }
    let le = fold(a + b);
    // The view's words start `lead` bytes into the data: at an even offset they are byte-swapped BE
    // words, at an odd one they line up with BE pairs shifted by one, which is the BE sum itself.
    if ((lead & 1) === 0) le = ((le & 0xff) << 8) | (le >>> 8);
    s += le;
    i += words * 4;
  }
  for (; i < end; i++) s += ((i - off) & 1) === 0 ? buf[i]! << 8 : buf[i]!;
  return s;
}

/** Folds an unfolded sum and complements it: the value to put in (or compare with) a checksum field. */
export function finishChecksum(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/** The checksum of a byte range (an IPv4 header, an ICMP message). 0 when a range holding its checksum is valid. */
export function checksum(buf: Uint8Array, off: number, len: number): number {
  return finishChecksum(sum16(buf, off, len));
}

/** The IPv4 pseudo-header sum for TCP/UDP (RFC 9293 §3.1): addresses, protocol, L4 length. */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, l4Length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + l4Length;
}
