/**
 * Bench: TLS leaf issuance by the workspace CA (goal: p50 at most 1 ms, no single issue over 5 ms
 * once warm), plus the cost of a cache hit and of the sniffers on a real-sized first flight.
 *
 *   node bench/egress-leaf.ts [--runs N]
 *
 * A script, not a test: it prints figures and never fails on them.
 */
import { LeafIssuer, caFromPem, generateCa } from "../src/egress/ca.ts";
import { parseClientHello } from "../src/egress/clienthello.ts";
import { parseHttpHead } from "../src/egress/http-head.ts";
import { buildHandshake, records } from "../test/helpers/egress-tls-hello.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : fallback;
}
const runs = Number(arg("--runs", "5000"));
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] as number;
const fmt = (ms: number) => `${(ms * 1000).toFixed(1)} µs`;

const t0 = performance.now();
const g = generateCa({ workspace: "bench" });
const ca = caFromPem(g.keyPem, g.certPem);
const caMs = performance.now() - t0;
const issuer = new LeafIssuer(ca, { newNamesPerSecond: Infinity, cacheSize: runs + 1 });
for (let i = 0; i < 200; i++) issuer.issue(`warm-${i}.bench.test`);

const fresh: number[] = [];
for (let i = 0; i < runs; i++) {
  const s = performance.now();
  issuer.issue(`host-${i}.bench.test`);
  fresh.push(performance.now() - s);
}
const hits: number[] = [];
for (let i = 0; i < runs; i++) {
  const s = performance.now();
  issuer.issue(`host-${i % 100}.bench.test`);
  hits.push(performance.now() - s);
}
const hello = records(buildHandshake({ sni: "api.example.com", alpn: ["h2", "http/1.1"], padding: 1200 }));
const head = Buffer.from("GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n");
const sniffs: number[] = [];
const heads: number[] = [];
for (let i = 0; i < runs; i++) {
  let s = performance.now();
  parseClientHello(hello);
  sniffs.push(performance.now() - s);
  s = performance.now();
  parseHttpHead(head);
  heads.push(performance.now() - s);
}
console.log(`CA generation (key + self-signed cert): ${caMs.toFixed(2)} ms`);
console.log(`leaf issuance, new name (n=${runs}): p50 ${fmt(pct(fresh, 0.5))}, p99 ${fmt(pct(fresh, 0.99))}, max ${fmt(Math.max(...fresh))}  [goal p50 <= 1 ms]`);
console.log(`leaf issuance, cache hit: p50 ${fmt(pct(hits, 0.5))}, p99 ${fmt(pct(hits, 0.99))}`);
console.log(`ClientHello parse (${hello.length} B): p50 ${fmt(pct(sniffs, 0.5))}; HTTP head parse (${head.length} B): p50 ${fmt(pct(heads, 0.5))}`);
