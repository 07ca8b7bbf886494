/**
 * The bytes a stream decoder holds between reads: a list of chunks and their total, so appending a
 * chunk never copies (no Buffer.concat per read) and taking n bytes copies only when they span chunks.
 * Both length-prefixed decoders (the guest channel's frames and QEMU's netdev stream) sit on it.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;

  /** Bytes held. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.#length += chunk.length;
  }

  /** The first n bytes, removed (a view of the chunk when they lie in one). The caller checks `length` first. */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`take(${n}) with only ${this.#length} bytes held`);
    this.#length -= n;
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.#chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0]!;
      const count = Math.min(c.length, n - off);
      c.copy(out, off, 0, count);
      off += count;
      if (count === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(count);
    }
    return out;
  }

  /** A big-endian uint32 at the front, removed, without allocating when it lies in one chunk. */
  takeUInt32BE(): number {
    const first = this.#chunks[0];
    if (first && first.length >= 4) {
      const v = first.readUInt32BE(0);
      this.#length -= 4;
      if (first.length === 4) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(4);
      return v;
    }
    return this.take(4).readUInt32BE(0);
  }

  clear(): void {
    this.#chunks = [];
    this.#length = 0;
  }
}
