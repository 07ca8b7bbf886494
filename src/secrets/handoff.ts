/**
 * The in-memory handoff of resolved secret values from the process that starts a workspace to
 * the supervisor it spawns. Values are resolved on the host side just before the spawn (every
 * start, from the manifest's references) and travel once, over a pipe on an extra file descriptor
 * (SECRET_HANDOFF_FD) that the supervisor reads to EOF at its start and then closes. Never argv or
 * the environment (both readable in /proc by anyone who can list the process), never a file.
 *
 * Frame (all integers big-endian), nothing before or after it:
 *   "MAS1"                         magic + version
 *   u16  count                     0..SECRETS_MAX_COUNT
 *   count x { u8 nameLength, name (ASCII, a valid secret name), u32 valueLength (1..SECRET_MAX_BYTES), value }
 * The sum of the value lengths is at most SECRETS_TOTAL_MAX_BYTES; the whole frame at most
 * SECRET_HANDOFF_MAX_BYTES, checked while reading (before buffering more).
 *
 * Decoding failures name the offset and the field, never bytes of a value. Every buffer that held
 * value bytes is zeroed once it is no longer needed (best effort: the values themselves live on in
 * SecretValue until their owner wipes them).
 */
import { Socket } from "node:net";
import type { Writable } from "node:stream";
import { SecretErrors } from "./errors.ts";
import { SECRET_NAME_MAX, SECRET_NAME_PATTERN, type SecretRef } from "./ref.ts";
import { SECRET_MAX_BYTES, SecretValue, type ResolvedSecret } from "./resolve.ts";

/** The supervisor's file descriptor the handoff arrives on (stdio[3] at spawn). */
export const SECRET_HANDOFF_FD = 3;
export const SECRETS_MAX_COUNT = 64;
/** All values of one boot together: they travel base64-encoded inside the guest's boot config. */
export const SECRETS_TOTAL_MAX_BYTES = 512 * 1024;
const MAGIC = Buffer.from("MAS1", "ascii");
const HEADER_BYTES = MAGIC.length + 2;
const ENTRY_OVERHEAD_BYTES = 1 + 4;
export const SECRET_HANDOFF_MAX_BYTES = HEADER_BYTES + SECRETS_MAX_COUNT * (ENTRY_OVERHEAD_BYTES + SECRET_NAME_MAX) + SECRETS_TOTAL_MAX_BYTES;
/** How long each side waits for the other (the supervisor starts in well under a second). */
export const SECRET_HANDOFF_TIMEOUT_MS = 15_000;

export interface HandoffEntry {
  name: string;
  value: SecretValue;
}

/**
 * Encode resolved secrets into one frame. Too many secrets, or values too large together, fail
 * with SECRET_TOO_LARGE naming the count and sizes (a start is refused before anything is spawned).
 */
export function encodeSecretHandoff(secrets: readonly ResolvedSecret[]): Buffer {
  if (secrets.length > SECRETS_MAX_COUNT) {
    throw SecretErrors.SECRET_TOO_LARGE({
      message: `${secrets.length} secrets, at most ${SECRETS_MAX_COUNT} per workspace`,
      remediation: `Reference at most ${SECRETS_MAX_COUNT} secrets; put related credentials in one file secret.`,
      details: { count: secrets.length, maxCount: SECRETS_MAX_COUNT },
    });
  }
  const total = secrets.reduce((n, s) => n + s.value.byteLength, 0);
  if (total > SECRETS_TOTAL_MAX_BYTES) {
    throw SecretErrors.SECRET_TOO_LARGE({
      message: `the secrets of this workspace hold ${total} bytes together (${secrets.map((s) => `${s.ref.name} ${s.value.byteLength}`).join(", ")}), over the ${SECRETS_TOTAL_MAX_BYTES}-byte limit of one boot`,
      remediation: `Keep the secrets of one workspace under ${SECRETS_TOTAL_MAX_BYTES} bytes together: they are delivered in the guest's boot config at every start.`,
      details: { totalBytes: total, maxTotalBytes: SECRETS_TOTAL_MAX_BYTES },
    });
  }
  const size = HEADER_BYTES + secrets.reduce((n, s) => n + ENTRY_OVERHEAD_BYTES + Buffer.byteLength(s.ref.name, "ascii") + s.value.byteLength, 0);
  const out = Buffer.alloc(size);
  let at = MAGIC.copy(out, 0);
  at = out.writeUInt16BE(secrets.length, at);
  for (const s of secrets) {
    const name = s.ref.name;
    if (!validName(name)) throw new Error(`internal: secret name ${JSON.stringify(name)} is not valid`);
    at = out.writeUInt8(name.length, at);
    at += out.write(name, at, "ascii");
    const value = s.value.reveal();
    if (value.length === 0 || value.length > SECRET_MAX_BYTES) throw new Error(`internal: secret ${name} has ${value.length} bytes`);
    at = out.writeUInt32BE(value.length, at);
    at += value.copy(out, at);
  }
  if (at !== size) throw new Error("internal: handoff frame size mismatch");
  return out;
}

function validName(name: string): boolean {
  return name.length >= 1 && name.length <= SECRET_NAME_MAX && SECRET_NAME_PATTERN.test(name);
}

function malformed(reason: string): Error {
  return SecretErrors.SECRET_HANDOFF_FAILED({ message: `the secrets handed to the supervisor are malformed: ${reason}`, details: { reason } });
}

/**
 * Decode one frame; `frame` is zeroed afterwards whatever the outcome. Throws
 * SECRET_HANDOFF_FAILED naming what is wrong (never value bytes).
 */
export function decodeSecretHandoff(frame: Buffer): HandoffEntry[] {
  const out: HandoffEntry[] = [];
  try {
    if (frame.length > SECRET_HANDOFF_MAX_BYTES) throw malformed(`${frame.length} bytes, over the ${SECRET_HANDOFF_MAX_BYTES}-byte limit`);
    if (frame.length < HEADER_BYTES) throw malformed(`${frame.length} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    if (!frame.subarray(0, MAGIC.length).equals(MAGIC)) throw malformed("bad magic (not a version 1 secrets frame)");
    const count = frame.readUInt16BE(MAGIC.length);
    if (count > SECRETS_MAX_COUNT) throw malformed(`${count} secrets, at most ${SECRETS_MAX_COUNT}`);
    let at = HEADER_BYTES;
    let total = 0;
    const seen = new Set<string>();
    for (let i = 0; i < count; i++) {
      if (at + 1 > frame.length) throw malformed(`secret ${i}: truncated before its name length (offset ${at})`);
      const nameLength = frame.readUInt8(at);
      at += 1;
      if (nameLength === 0 || nameLength > SECRET_NAME_MAX) throw malformed(`secret ${i}: name length ${nameLength} is outside 1..${SECRET_NAME_MAX}`);
      if (at + nameLength > frame.length) throw malformed(`secret ${i}: truncated inside its name (offset ${at})`);
      const nameBytes = frame.subarray(at, at + nameLength);
      const name = nameBytes.toString("latin1");
      at += nameLength;
      if (!validName(name)) throw malformed(`secret ${i}: the name is not a valid secret name`);
      if (seen.has(name)) throw malformed(`secret ${name} appears twice`);
      seen.add(name);
      if (at + 4 > frame.length) throw malformed(`secret ${name}: truncated before its value length (offset ${at})`);
      const valueLength = frame.readUInt32BE(at);
      at += 4;
      if (valueLength === 0 || valueLength > SECRET_MAX_BYTES) throw malformed(`secret ${name}: value length ${valueLength} is outside 1..${SECRET_MAX_BYTES}`);
      total += valueLength;
      if (total > SECRETS_TOTAL_MAX_BYTES) throw malformed(`the values add up to more than ${SECRETS_TOTAL_MAX_BYTES} bytes`);
      if (at + valueLength > frame.length) throw malformed(`secret ${name}: the value is truncated (${frame.length - at} of ${valueLength} bytes)`);
      out.push({ name, value: new SecretValue(Buffer.from(frame.subarray(at, at + valueLength))) });
      at += valueLength;
    }
    if (at !== frame.length) throw malformed(`${frame.length - at} bytes after the last secret`);
    return out;
  } catch (e) {
    for (const s of out) s.value.wipe();
    throw e;
  } finally {
    frame.fill(0);
  }
}

/**
 * Pair decoded values with the manifest's references: the same names in the same order, or the
 * handoff is refused (a supervisor never delivers a value the manifest does not name).
 */
export function pairSecretHandoff(refs: readonly SecretRef[], entries: readonly HandoffEntry[]): ResolvedSecret[] {
  const want = refs.map((r) => r.name);
  const got = entries.map((e) => e.name);
  if (want.length !== got.length || want.some((n, i) => n !== got[i])) {
    for (const e of entries) e.value.wipe();
    throw SecretErrors.SECRET_HANDOFF_FAILED({
      message: `the supervisor was handed secrets [${got.join(", ")}] but the manifest names [${want.join(", ")}]`,
      details: { handed: got, manifest: want },
    });
  }
  return refs.map((ref, i) => ({ ref, value: (entries[i] as HandoffEntry).value }));
}

/**
 * Host side: write the frame to the supervisor's handoff pipe and end it; resolves once the bytes
 * are handed to the kernel (or read by the supervisor), then zeroes `frame`. A supervisor that dies
 * or never reads fails it (bounded by `timeoutMs`).
 */
export function writeSecretHandoff(stream: Writable, frame: Buffer, timeoutMs = SECRET_HANDOFF_TIMEOUT_MS): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (e?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      frame.fill(0);
      stream.removeListener("error", onError);
      if (e) {
        stream.destroy();
        reject(SecretErrors.SECRET_HANDOFF_FAILED({ message: `handing the secrets to the supervisor failed: ${e.message}`, cause: e }));
      } else {
        resolve();
      }
    };
    const onError = (e: Error) => finish(e);
    const timer = setTimeout(() => finish(new Error(`the supervisor did not take them within ${timeoutMs} ms`)), timeoutMs);
    stream.on("error", onError);
    stream.end(frame, () => finish());
  });
}

export interface ReadSecretHandoffOptions {
  /** Default SECRET_HANDOFF_MAX_BYTES. */
  maxBytes?: number;
  /** Default SECRET_HANDOFF_TIMEOUT_MS. */
  timeoutMs?: number;
}

/**
 * Supervisor side: read `fd` to EOF (at most `maxBytes`: more fails before it is buffered),
 * close it, and decode. Fails with SECRET_HANDOFF_FAILED when the fd is not open, the writer goes
 * away mid-frame, the frame is malformed or too large, or nothing arrives in time.
 */
export function readSecretHandoff(fd: number = SECRET_HANDOFF_FD, options: ReadSecretHandoffOptions = {}): Promise<HandoffEntry[]> {
  const maxBytes = options.maxBytes ?? SECRET_HANDOFF_MAX_BYTES;
  const timeoutMs = options.timeoutMs ?? SECRET_HANDOFF_TIMEOUT_MS;
  return new Promise<HandoffEntry[]>((resolve, reject) => {
    let sock: Socket;
    try {
      sock = new Socket({ fd, readable: true, writable: false, allowHalfOpen: true });
    } catch (e) {
      reject(SecretErrors.SECRET_HANDOFF_FAILED({ message: `the secrets pipe (fd ${fd}) cannot be read: ${(e as Error).message}`, cause: e }));
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    let done = false;
    const wipe = () => {
      for (const c of chunks) c.fill(0);
      chunks.length = 0;
    };
    const finish = (e: Error | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (e) {
        wipe();
        reject(SecretErrors.SECRET_HANDOFF_FAILED.is(e) ? e : SecretErrors.SECRET_HANDOFF_FAILED({ message: `reading the secrets pipe (fd ${fd}) failed: ${e.message}`, cause: e }));
        return;
      }
      const frame = Buffer.concat(chunks, bytes);
      wipe();
      try {
        resolve(decodeSecretHandoff(frame));
      } catch (err) {
        reject(err);
      }
    };
    const timer = setTimeout(() => finish(new Error(`nothing complete arrived within ${timeoutMs} ms`)), timeoutMs);
    sock.on("data", (d: Buffer) => {
      if (done) return;
      bytes += d.length;
      if (bytes > maxBytes) {
        d.fill(0);
        finish(malformed(`more than ${maxBytes} bytes`));
        return;
      }
      chunks.push(d);
    });
    sock.on("end", () => finish(undefined));
    sock.on("error", (e) => finish(e));
    sock.on("close", () => finish(bytes === 0 ? new Error("closed before any byte arrived") : new Error("closed mid-frame")));
  });
}
