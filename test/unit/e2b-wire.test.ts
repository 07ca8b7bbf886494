/**
 * The parts of `serve e2b` that need no VM: Connect-JSON framing, error-kind mapping, `stat` line
 * parsing, the flag parsers, and the request router on an empty sandbox table (auth, unknown
 * sandboxes, the multiplexing headers). Everything with a guest is in test/integration/e2b-sdk.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connectCode, endStream, envelope, parseStreamRequest, streamResponse, unaryErrorResponse } from "../../src/server/e2b/connect.ts";
import { E2bErrors } from "../../src/server/e2b/errors.ts";
import { httpStatus } from "../../src/server/e2b/http-errors.ts";
import { parseStatLine } from "../../src/server/e2b/guest.ts";
import { isLoopback, parseListen, parseTemplates } from "../../src/server/e2b/command.ts";
import { e2bFetch } from "../../src/server/e2b/server.ts";
import { SandboxTable } from "../../src/server/e2b/sandboxes.ts";
import { CommonErrors, definedErrorCodes } from "../../src/contract/errors.ts";

function frames(buf: Buffer): Array<{ flags: number; json: unknown }> {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    const len = buf.readUInt32BE(off + 1);
    out.push({ flags: buf[off]!, json: JSON.parse(buf.subarray(off + 5, off + 5 + len).toString()) });
    off += 5 + len;
  }
  return out;
}

test("e2b-wire: envelopes round-trip and a stream ends with the end-of-stream frame", async () => {
  const e = Buffer.from(envelope({ process: { cmd: "/bin/bash" } }));
  assert.equal(e[0], 0);
  assert.deepEqual(parseStreamRequest(e), { process: { cmd: "/bin/bash" } });
  assert.throws(() => parseStreamRequest(e.subarray(0, e.length - 1)), /truncated/);
  assert.deepEqual(frames(Buffer.from(endStream())), [{ flags: 2, json: {} }]);

  const ok = streamResponse(async (send) => {
    send({ event: { start: { pid: 7 } } });
    send({ event: { end: { exitCode: 0 } } });
  });
  assert.equal(ok.headers.get("content-type"), "application/connect+json");
  assert.deepEqual(frames(Buffer.from(await ok.arrayBuffer())), [
    { flags: 0, json: { event: { start: { pid: 7 } } } },
    { flags: 0, json: { event: { end: { exitCode: 0 } } } },
    { flags: 2, json: {} },
  ]);
  const failed = streamResponse(async () => {
    throw E2bErrors.E2B_USER_NOT_FOUND({ message: "user 'ghost' does not exist" });
  });
  const [end] = frames(Buffer.from(await failed.arrayBuffer()));
  assert.equal(end!.flags, 2);
  const err = (end!.json as { error: { code: string; message: string } }).error;
  assert.equal(err.code, "not_found");
  assert.match(err.message, /user 'ghost' does not exist \[E2B_USER_NOT_FOUND\]/);
});

test("e2b-wire: every E2B code keeps its kind on the wire (Connect code and HTTP status)", async () => {
  const kindToConnect: Record<string, string[]> = {
    not_found: ["not_found"],
    conflict: ["aborted", "already_exists", "failed_precondition"],
    permanent: ["failed_precondition", "invalid_argument", "internal"],
    policy_denied: ["permission_denied", "unauthenticated"],
    unsupported: ["unimplemented"],
    transient: ["unavailable"],
    resource_exhausted: ["resource_exhausted"],
  };
  const kindToHttp: Record<string, number[]> = { not_found: [404], conflict: [409], permanent: [400, 500], policy_denied: [401, 403], unsupported: [501], transient: [503], resource_exhausted: [413, 429, 507] };
  let n = 0;
  for (const [code, spec] of definedErrorCodes()) {
    if (!code.startsWith("E2B_")) continue;
    n++;
    const e = (E2bErrors as Record<string, (i: { message: string }) => Parameters<typeof connectCode>[0]>)[code]!({ message: "m" });
    assert.ok(kindToConnect[spec.kind]!.includes(connectCode(e)), `${code} (${spec.kind}) -> ${connectCode(e)}`);
    assert.ok(kindToHttp[spec.kind]!.includes(httpStatus(e)), `${code} (${spec.kind}) -> HTTP ${httpStatus(e)}`);
  }
  assert.ok(n >= 10, `only ${n} E2B codes`);
  assert.equal(connectCode(CommonErrors.INVALID_ARGUMENT({ message: "m" })), "invalid_argument");
  const r = unaryErrorResponse(E2bErrors.E2B_PATH_EXISTS({ message: "exists" }));
  assert.equal(r.status, 409);
  assert.equal(((await r.json()) as { code: string }).code, "already_exists");
});

test("e2b-wire: stat lines from busybox and GNU stat become envd EntryInfo", () => {
  assert.deepEqual(parseStatLine("regular empty file\t0\t644\t-rw-r--r--\tuser\tuser\t1700000000\t/home/user/a\tb.txt"), {
    name: "a\tb.txt",
    type: "FILE_TYPE_FILE",
    path: "/home/user/a\tb.txt",
    size: "0",
    mode: 0o644,
    permissions: "-rw-r--r--",
    owner: "user",
    group: "user",
    modifiedTime: "2023-11-14T22:13:20.000Z",
  });
  assert.equal(parseStatLine("directory\t4096\t1777\tdrwxrwxrwt\troot\troot\t1\t/tmp")!.type, "FILE_TYPE_DIRECTORY");
  assert.equal(parseStatLine("symbolic link\t3\t777\tlrwxrwxrwx\troot\troot\t1\t/bin/sh")!.type, "FILE_TYPE_SYMLINK");
  assert.equal(parseStatLine("fifo\t0\t600\tprw-------\troot\troot\t1\t/tmp/f")!.type, "FILE_TYPE_UNSPECIFIED");
  assert.equal(parseStatLine("directory\t4096\t755\tdrwxr-xr-x\troot\troot\t1\t/")!.name, "/");
  assert.equal(parseStatLine("garbage"), undefined);
});

test("e2b-wire: --listen, loopback and --template parsing", () => {
  assert.deepEqual(parseListen("127.0.0.1:3000"), { hostname: "127.0.0.1", port: 3000 });
  assert.deepEqual(parseListen("[::1]:0"), { hostname: "::1", port: 0 });
  assert.throws(() => parseListen("3000"), /not HOST:PORT/);
  assert.throws(() => parseListen("127.0.0.1:70000"), /not HOST:PORT/);
  assert.equal(isLoopback("127.0.0.1"), true);
  assert.equal(isLoopback("127.9.8.7"), true);
  assert.equal(isLoopback("::1"), true);
  assert.equal(isLoopback("0.0.0.0"), false);
  assert.equal(isLoopback("192.168.1.2"), false);
  assert.deepEqual(parseTemplates(["base=docker.io/library/debian:12", "py=reg:5000/py@sha256:ab"]), { base: "docker.io/library/debian:12", py: "reg:5000/py@sha256:ab" });
  assert.throws(() => parseTemplates(["base"]), /NAME=IMAGE/);
  assert.throws(() => parseTemplates(["=img"]), /NAME=IMAGE/);
});

test("e2b-wire: the router: API key, unknown sandboxes on both planes, the port header", async () => {
  const table = new SandboxTable({ host: { stateDir: "/nonexistent-e2b-unit" }, templates: {}, network: "isolated" });
  const open = e2bFetch(table, undefined);
  const keyed = e2bFetch(table, "sekrit");
  const at = (path: string, init: RequestInit = {}) => new Request(`http://127.0.0.1${path}`, init);

  assert.equal((await open(at("/v2/sandboxes"))).status, 401, "no X-API-KEY at all");
  const listed = await open(at("/v2/sandboxes", { headers: { "X-API-KEY": "anything" } }));
  assert.equal(listed.status, 200);
  assert.deepEqual(await listed.json(), []);
  assert.equal((await keyed(at("/sandboxes", { headers: { "X-API-KEY": "wrong" } }))).status, 401);
  assert.equal((await keyed(at("/sandboxes", { headers: { "X-API-KEY": "sekrit" } }))).status, 200);

  const missing = await open(at("/sandboxes/abc", { headers: { "X-API-KEY": "k" } }));
  assert.equal(missing.status, 404);
  assert.match(((await missing.json()) as { message: string }).message, /sandbox abc does not exist/);
  assert.equal((await open(at("/sandboxes/abc", { method: "DELETE", headers: { "X-API-KEY": "k" } }))).status, 404);
  assert.equal((await open(at("/sandboxes/abc/timeout", { method: "POST", headers: { "X-API-KEY": "k", "content-type": "application/json" }, body: '{"timeout":5}' }))).status, 404);
  const bad = await open(at("/v2/sandboxes", { method: "POST", headers: { "X-API-KEY": "k", "content-type": "application/json" }, body: "{}" }));
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as { message: string }).message, /templateID/);
  const paused = await open(at("/v2/sandboxes", { method: "POST", headers: { "X-API-KEY": "k", "content-type": "application/json" }, body: '{"templateID":"x","autoPause":true}' }));
  assert.equal(paused.status, 501);

  // envd: a sandbox that is not here answers 502, as E2B's proxy does for a dead one (the SDK's "not running").
  const health = await open(at("/health", { headers: { "E2b-Sandbox-Id": "gone", "E2b-Sandbox-Port": "49983" } }));
  assert.equal(health.status, 502);
  const other = await open(at("/health", { headers: { "E2b-Sandbox-Id": "gone", "E2b-Sandbox-Port": "8080" } }));
  assert.equal(other.status, 501, "ports other than envd's are not forwarded");
});
