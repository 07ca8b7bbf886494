/**
 * A byte queue over a list of buffers: append without copying, drop from the front, copy any range out
 * (a cursor remembers where the last copy ended, so sending a queue segment by segment stays linear).
 */
const BLOCK_BYTES = 16 * 1024;

export class ChunkQueue {
  #chunks: Buffer[] = [];
  #first = 0;
  #headOff = 0;
  #length = 0;
  #curIdx = 0;
  #curStart = 0;

  get length(): number {
    return this.#length;
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.#chunks.push(b);
    this.#length += b.length;
  }

  #block: Buffer | undefined;
  #blockUsed = 0;

  /**
   * Appends a copy of `src`, packing small pieces into shared blocks: a guest sending one-byte segments
   * costs a few buffer objects per block, not one per byte (the byte caps cannot see object overhead).
   */
  pushCopy(src: Buffer): void {
    const n = src.length;
    if (n === 0) return;
    const b = this.#block;
    if (b && this.#blockUsed + n <= b.length) {
      // Keep filling the current block (views handed out earlier lie below #blockUsed, untouched).
      src.copy(b, this.#blockUsed);
      const last = this.#chunks.length > this.#first ? this.#chunks[this.#chunks.length - 1]! : undefined;
      if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset + this.#blockUsed) {
        this.#chunks[this.#chunks.length - 1] = b.subarray(last.byteOffset - b.byteOffset, this.#blockUsed + n);
        this.#length += n;
      } else this.push(b.subarray(this.#blockUsed, this.#blockUsed + n));
      this.#blockUsed += n;
      return;
    }
    if (n >= BLOCK_BYTES / 2) {
      const c = Buffer.allocUnsafe(n);
      src.copy(c);
      this.push(c);
      return;
    }
    this.#block = Buffer.allocUnsafeSlow(BLOCK_BYTES);
    this.#blockUsed = n;
    src.copy(this.#block, 0);
    this.push(this.#block.subarray(0, n));
  }

  /** Drops n bytes from the front. */
  drop(n: number): void {
    if (n > this.#length) throw new RangeError(`drop(${n}) with ${this.#length} queued`);
    const dropped = n;
    this.#length -= n;
    while (n > 0) {
      const c = this.#chunks[this.#first]!;
      const avail = c.length - this.#headOff;
      if (avail <= n) {
        n -= avail;
        this.#first++;
        this.#headOff = 0;
      } else {
        this.#headOff += n;
        n = 0;
      }
    }
    // The cursor holds the live start of chunk #curIdx relative to the head; the head moved by `dropped`.
    if (this.#curIdx <= this.#first) this.#resetCursor();
    else this.#curStart -= dropped;
    if (this.#first === this.#chunks.length) {
      this.#chunks = [];
      this.#first = 0;
      this.#resetCursor();
    } else if (this.#first > 64 && this.#first * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#curIdx -= this.#first;
      this.#first = 0;
    }
  }

  /** Takes up to max bytes from the front without copying (a view of the first chunk). */
  shift(max: number): Buffer {
    const c = this.#chunks[this.#first]!;
    const n = Math.min(max, c.length - this.#headOff);
    const out = c.subarray(this.#headOff, this.#headOff + n);
    this.drop(n);
    return out;
  }

  /**
   * Takes up to max bytes from the front as one buffer: a view when they sit in one chunk, else one copy
   * (so many small segments reach the host as one write, not one syscall each).
   */
  take(max: number): Buffer {
    const c = this.#chunks[this.#first]!;
    const n = Math.min(max, this.#length);
    if (c.length - this.#headOff >= n) return this.shift(n);
    const out = Buffer.allocUnsafe(n);
    this.copyOut(0, n, out, 0);
    this.drop(n);
    return out;
  }

  /** Copies n bytes starting `off` bytes into the queue to dst at dstOff. */
  copyOut(off: number, n: number, dst: Buffer, dstOff: number): void {
    if (off + n > this.#length) throw new RangeError(`copyOut(${off}, ${n}) with ${this.#length} queued`);
    if (off < this.#curStart) this.#resetCursor();
    let idx = this.#curIdx;
    let start = this.#curStart;
    for (;;) {
      const c = this.#chunks[idx]!;
      const skip = idx === this.#first ? this.#headOff : 0;
      const len = c.length - skip;
      if (off < start + len) break;
      start += len;
      idx++;
    }
    this.#curIdx = idx;
    this.#curStart = start;
    while (n > 0) {
      const c = this.#chunks[idx]!;
      const skip = idx === this.#first ? this.#headOff : 0;
      const from = skip + (off - start);
      const take = Math.min(n, c.length - from);
      c.copy(dst, dstOff, from, from + take);
      dstOff += take;
      n -= take;
      off += take;
      if (from + take === c.length) {
        start += c.length - skip;
        idx++;
      }
    }
  }

  clear(): void {
    this.#block = undefined;
    this.#blockUsed = 0;
    this.#chunks = [];
    this.#first = 0;
    this.#headOff = 0;
    this.#length = 0;
    this.#resetCursor();
  }

  #resetCursor(): void {
    this.#curIdx = this.#first;
    this.#curStart = 0;
  }
}
