/**
 * Seeded fuzz of the guest's frame and JSON parsing: the real init binary (served on a socket) gets
 * well-framed garbage after a valid handshake. It must answer with GOAWAY and exit 3, or keep serving;
 * it must never die from a signal (a crash in the C parser) or hang on exit.
 * Commands it may run are harmless by construction (no file writes, argv from a fixed list).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { encodeFrame, FRAME_TYPES } from "../../src/channel/frame.ts";
import type { FrameTypeName } from "../../src/channel/frame.ts";
import { prng } from "../helpers/prng.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const INIT = join(ROOT, "guest/build/microagent-init");
execFileSync("make", ["-s", "-C", join(ROOT, "guest")], { stdio: "inherit" });

/** Any header at all (the host encoder refuses rule-breaking frames; the guest must cope with them). */
function rawFrame(type: number, stream: number, channel: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32BE(payload.length, 0);
  h.writeUInt32BE(stream, 4);
  h[8] = type;
  h[9] = channel;
  return Buffer.concat([h, payload]);
}

const TEMPLATES: string[] = [
  '{"type":"ping","id":1}',
  '{"type":"boot-config","config":{"argv":["true"],"env":["A=1"],"setup":["true"],"stopSignal":"NOPE"}}',
  '{"type":"boot-config","config":{"argv":"notarray","env":[1,2]}}',
  '{"type":"boot-config","config":[]}',
  // Secrets are validated whole before anything is written; off PID 1 and without MICROAGENT_INIT_SECRETS_DIR nothing is.
  '{"type":"boot-config","config":{"secrets":[{"name":"A","contentBase64":"QUJD"},{"name":"../x","contentBase64":"QQ=="}]}}',
  '{"type":"boot-config","config":{"user":"nobody","secrets":[{"name":"A"},7,null,{"name":"B","contentBase64":"!!"},{"name":"A","contentBase64":"QQ=="}]}}',
  '{"kind":"exec","argv":["echo","fuzz"],"timeoutMs":100,"stdoutLimitBytes":-5}',
  '{"kind":"exec","argv":[]}',
  '{"kind":"exec","argv":[1]}',
  '{"kind":"console","cols":1e309,"rows":-1,"argv":["true"]}',
  '{"kind":"teleport"}',
  '{"type":"resize","cols":"wide"}',
  '{"type":"signal","signal":"SIGFAKE"}',
  '{"type":"\\ud800"}',
  '{"type":"a\\u0000b"}',
  '{"a":' + "[".repeat(5000),
  '"just a string"',
  "123",
  "{}",
  '{"type":null}',
  '{"type":"welcome","protocol":1}',
];

test("guest fuzz: well-framed garbage never crashes the init", { timeout: 120_000 }, async () => {
  const types: FrameTypeName[] = ["open", "data", "eof", "credit", "msg", "close", "welcome", "hello"];
  let goaways = 0;
  let alive = 0;
  for (let seed = 1; seed <= 120; seed++) {
    const rnd = prng(seed);
    const child = spawn(INIT, ["--serve-fd", "3"], { stdio: ["ignore", "ignore", "ignore", "pipe"], env: { ...process.env, MICROAGENT_INIT_SECRETS_DIR: undefined } });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));
    const sock = child.stdio[3] as Duplex;
    sock.on("error", () => {});
    sock.resume();
    try {
      sock.write(encodeFrame({ type: "welcome", stream: 0, channel: 0, payload: Buffer.from('{"type":"welcome","protocol":1,"maxFrameBytes":65536,"initialWindowBytes":65536}') }, 1 << 20));
      const frames = 1 + Math.floor(rnd() * 8);
      for (let i = 0; i < frames; i++) {
        const type = types[Math.floor(rnd() * types.length)]!;
        const stream = type === "welcome" || type === "hello" ? 0 : Math.floor(rnd() * 8);
        let payload: Buffer;
        if (type === "credit") payload = Buffer.from([0, 0, Math.floor(rnd() * 256), Math.floor(rnd() * 256)]);
        else if (type === "eof") payload = Buffer.alloc(0);
        else if (rnd() < 0.9) {
          let t = TEMPLATES[Math.floor(rnd() * TEMPLATES.length)]!;
          if (rnd() < 0.1) t = t.slice(0, Math.floor(rnd() * t.length)); // truncated JSON
          payload = Buffer.from(t);
        } else payload = Buffer.from(Array.from({ length: Math.floor(rnd() * 300) }, () => Math.floor(rnd() * 256)));
        const wire = rawFrame(FRAME_TYPES[type === "hello" ? "msg" : type], stream, type === "data" || type === "eof" ? Math.floor(rnd() * 4) : 0, payload);
        if (rnd() < 0.02) wire[8] = Math.floor(rnd() * 256); // an unknown type now and then
        if (!sock.writable) break;
        sock.write(wire);
      }
      const outcome = await Promise.race([exited, new Promise<"alive">((r) => setTimeout(() => r("alive"), 300))]);
      if (outcome !== "alive") {
        assert.equal(outcome.signal, null, `seed ${seed}: the init died from ${outcome.signal}`);
        assert.ok(outcome.code === 3 || outcome.code === 0, `seed ${seed}: exit code ${outcome.code}`);
        if (outcome.code === 3) goaways++;
      } else {
        alive++;
        // Still serving: it must still answer a ping.
        sock.write(encodeFrame({ type: "msg", stream: 0, channel: 0, payload: Buffer.from('{"type":"ping","id":77}') }, 1 << 20));
      }
    } finally {
      child.kill("SIGKILL");
      const end = await exited;
      assert.ok(end.signal === null || end.signal === "SIGKILL", `seed ${seed}: ${JSON.stringify(end)}`);
    }
  }
  assert.ok(alive > 0, "no session survived the fuzz: the valid messages are never exercised");
  assert.ok(goaways > 10, `only ${goaways} sessions ended with a goaway: the fuzz is not reaching the checks`);
});
