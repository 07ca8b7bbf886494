/**
 * ClientHello fixtures for the egress sniffer tests: real first flights captured from Node's TLS
 * client and from `openssl s_client` on a loopback listener, and a small builder for synthetic
 * hellos (sizes, fragmentation and malformations real clients never produce).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { connect } from "node:tls";

/** The bytes a client sends first, captured on a 127.0.0.1 listener that never answers. */
async function capture(start: (port: number) => () => void): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ClientHello within 5 s")), 5000);
      let stop: () => void = () => {};
      server.once("connection", (sock) => {
        const chunks: Buffer[] = [];
        let quiet: NodeJS.Timeout | undefined;
        sock.on("data", (d) => {
          chunks.push(d);
          clearTimeout(quiet);
          // the whole first flight is in once the client has been quiet for a moment
          quiet = setTimeout(() => {
            clearTimeout(timer);
            sock.destroy();
            stop();
            resolve(Buffer.concat(chunks));
          }, 150);
        });
        sock.on("error", () => {});
      });
      stop = start(port);
    });
  } finally {
    server.close();
  }
}

export function nodeClientHello(o: { servername?: string; alpn?: string[] }): Promise<Buffer> {
  return capture((port) => {
    const s = connect({ host: "127.0.0.1", port, ...(o.servername ? { servername: o.servername } : {}), ALPNProtocols: o.alpn, rejectUnauthorized: false });
    s.on("error", () => {});
    return () => s.destroy();
  });
}

export function opensslClientHello(o: { servername: string; alpn: string }): Promise<Buffer> {
  return capture((port) => {
    const p = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", o.servername, "-alpn", o.alpn], { stdio: ["pipe", "ignore", "ignore"] });
    p.on("error", () => {});
    return () => p.kill("SIGKILL");
  });
}

const u16 = (n: number) => [(n >> 8) & 255, n & 255];

export interface HelloSpec {
  sni?: string | null;
  alpn?: string[];
  /** Another opaque extension of this many bytes (a post-quantum key share, say). */
  padding?: number;
  duplicateSni?: boolean;
  twoHostNames?: boolean;
  /** Add an (empty-bodied) extension of this type, e.g. 0xfe0d encrypted_client_hello. */
  extension?: number;
}

/** A ClientHello handshake message (type 1 + 24-bit length + body). */
export function buildHandshake(spec: HelloSpec): Buffer {
  const exts: number[] = [];
  const sniExt = (name: string, second?: string) => {
    const entries: number[] = [];
    for (const n of second ? [name, second] : [name]) entries.push(0, ...u16(n.length), ...Buffer.from(n, "latin1"));
    const body = [...u16(entries.length), ...entries];
    exts.push(...u16(0), ...u16(body.length), ...body);
  };
  if (spec.sni) {
    sniExt(spec.sni, spec.twoHostNames ? "other.test" : undefined);
    if (spec.duplicateSni) sniExt("second.test");
  }
  if (spec.alpn?.length) {
    const list: number[] = [];
    for (const p of spec.alpn) list.push(p.length, ...Buffer.from(p, "latin1"));
    const body = [...u16(list.length), ...list];
    exts.push(...u16(16), ...u16(body.length), ...body);
  }
  if (spec.extension !== undefined) exts.push(...u16(spec.extension), ...u16(2), 0, 0);
  if (spec.padding) exts.push(...u16(0x11ec), ...u16(spec.padding), ...new Array(spec.padding).fill(0x5a));
  const body = [3, 3, ...new Array(32).fill(7), 0, ...u16(4), 0x13, 0x01, 0x13, 0x02, 1, 0, ...u16(exts.length), ...exts];
  return Buffer.from([1, (body.length >> 16) & 255, (body.length >> 8) & 255, body.length & 255, ...body]);
}

/** Wrap handshake bytes into TLS records of at most `recordSize` bytes each. */
export function records(handshake: Buffer, recordSize = 16384): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < handshake.length; i += recordSize) {
    const frag = handshake.subarray(i, i + recordSize);
    out.push(Buffer.from([22, 3, 1, ...u16(frag.length)]), frag);
  }
  return Buffer.concat(out);
}
