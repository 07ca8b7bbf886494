/**
 * The HTTP API daemon without a VM: the OpenAPI document (well-formed 3.1, and the checked-in copy
 * matches), the listeners (socket mode, stale sockets, a second daemon, the bearer token on TCP, the
 * non-loopback refusal) and the error wire format. The VM paths are in test/integration/server-adapters.test.ts.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdir, writeFile, chmod } from "node:fs/promises";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { openApiDocument } from "../../src/server/http/openapi.ts";
import { startDaemon, parseListen, isLoopback, loadToken } from "../../src/server/http/daemon.ts";
import { ErrorResultSchema, ListJsonSchema } from "../../src/contract/results.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { api, closeAgents } from "../helpers/api-client.ts";
import { scratchDir } from "../helpers/scratch.ts";

const DOC_PATH = new URL("../../docs/openapi.json", import.meta.url).pathname;

after(closeAgents);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/** Structural checks of an OpenAPI 3.1 document: what a validator would reject first. */
function openApiProblems(doc: Json): string[] {
  const p: string[] = [];
  if (doc.openapi !== "3.1.0") p.push(`openapi is ${doc.openapi}`);
  if (typeof doc.info?.title !== "string" || typeof doc.info?.version !== "string") p.push("info.title/version");
  const schemas = doc.components?.schemas ?? {};
  const refs: string[] = [];
  const walk = (v: Json, at: string) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${at}[${i}]`));
    else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        if (k === "$ref") refs.push(String(x));
        walk(x, `${at}.${k}`);
      }
    }
  };
  walk(doc.paths, "paths");
  for (const r of refs) {
    const m = /^#\/components\/schemas\/(.+)$/.exec(r);
    if (!m || !schemas[m[1] as string]) p.push(`dangling $ref ${r}`);
  }
  for (const [name, s] of Object.entries(schemas)) {
    if (!s || typeof s !== "object") p.push(`schema ${name} is not an object`);
    if ((s as Json).$schema) p.push(`schema ${name} carries $schema`);
  }
  const ids = new Set<string>();
  const METHODS = new Set(["get", "put", "post", "delete", "patch", "head", "options", "trace"]);
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    if (!path.startsWith("/")) p.push(`path ${path} does not start with /`);
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const [method, op] of Object.entries(item as Json)) {
      if (!METHODS.has(method)) p.push(`${path}: unknown method ${method}`);
      const o = op as Json;
      if (!o.operationId || ids.has(o.operationId)) p.push(`${path} ${method}: operationId missing or repeated`);
      ids.add(o.operationId);
      if (!o.responses || Object.keys(o.responses).length === 0) p.push(`${path} ${method}: no responses`);
      for (const [code, r] of Object.entries(o.responses ?? {})) {
        if (!/^([1-5]\d\d|[1-5]XX|default)$/.test(code)) p.push(`${path} ${method}: response code ${code}`);
        if (typeof (r as Json).description !== "string") p.push(`${path} ${method} ${code}: no description`);
      }
      for (const t of templated) {
        const param = (o.parameters ?? []).find((x: Json) => x.in === "path" && x.name === t);
        if (!param || param.required !== true) p.push(`${path} ${method}: path parameter ${t} not declared as required`);
      }
      for (const param of o.parameters ?? []) {
        if (!["path", "query", "header", "cookie"].includes(param.in)) p.push(`${path} ${method}: parameter ${param.name} in ${param.in}`);
        if (!param.schema) p.push(`${path} ${method}: parameter ${param.name} has no schema`);
      }
    }
  }
  return p;
}

test("server-http: the OpenAPI document is well-formed 3.1 and built from the zod schemas", () => {
  const doc = openApiDocument();
  assert.deepEqual(openApiProblems(doc), []);
  const s = (doc as Json).components.schemas;
  // The request body is the library's request schema (strict: unknown fields are refused).
  assert.equal(s.CreateRequest.additionalProperties, false);
  assert.ok(s.CreateRequest.properties.image && s.CreateRequest.properties.name);
  assert.deepEqual(s.CreateRequest.required, ["name"]);
  assert.ok(s.Exec.properties.protocolVersion, "the exec result schema is the CLI's");
  // And the checker itself catches a broken document.
  const broken = structuredClone(doc) as Json;
  broken.paths["/v1/workspaces/{name}"].get.parameters = [];
  broken.paths["/v1/host"].get.responses["200"] = { $ref: "#/components/schemas/Nope" };
  assert.equal(openApiProblems(broken).length >= 2, true);
});

test("server-http: docs/openapi.json is the generated document (MICROAGENT_UPDATE_OPENAPI=1 rewrites it)", () => {
  const generated = `${JSON.stringify(openApiDocument(), null, 2)}\n`;
  if (process.env.MICROAGENT_UPDATE_OPENAPI === "1") writeFileSync(DOC_PATH, generated);
  assert.equal(readFileSync(DOC_PATH, "utf8"), generated, "docs/openapi.json drifted: rerun with MICROAGENT_UPDATE_OPENAPI=1");
});

test("server-http: listen addresses and tokens", async () => {
  assert.deepEqual(parseListen("127.0.0.1:8080"), { host: "127.0.0.1", port: 8080 });
  assert.deepEqual(parseListen("[::1]:0"), { host: "::1", port: 0 });
  assert.throws(() => parseListen("8080"), (e: unknown) => isMicroagentError(e) && e.code === "LISTEN_REFUSED");
  for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) assert.equal(isLoopback(h), true, h);
  for (const h of ["0.0.0.0", "10.0.0.1", "::", "192.168.1.1"]) assert.equal(isLoopback(h), false, h);
  const dir = scratchDir("srv-token");
  const f = join(dir, "sub", "api.token");
  const t = await loadToken(f);
  assert.ok(t.length >= 32);
  assert.equal(statSync(f).mode & 0o777, 0o600);
  assert.equal(await loadToken(f), t, "an existing token is reused");
  await chmod(f, 0o644);
  await assert.rejects(loadToken(f), (e: unknown) => isMicroagentError(e) && e.code === "LISTEN_REFUSED" && /readable by other users/.test(e.message));
});

test("server-http: the daemon on its socket (0600), errors on the wire, a second daemon refused, a stale socket reclaimed", async () => {
  const stateDir = scratchDir("srv-http");
  const d = await startDaemon({ host: { stateDir } });
  try {
    const sock = d.addresses.socket;
    assert.equal(sock, join(stateDir, "microagent.sock"));
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    const t = { socket: sock };
    const list = await api(t, "GET", "/v1/workspaces");
    assert.equal(list.status, 200);
    assert.deepEqual(ListJsonSchema.parse(list.json()), { workspaces: [] });
    const served = await api(t, "GET", "/openapi.json");
    assert.deepEqual(served.json(), JSON.parse(JSON.stringify(openApiDocument())));
    // Errors: the library's error object, status from its kind.
    const missing = await api(t, "GET", "/v1/workspaces/nope");
    assert.equal(missing.status, 404);
    assert.ok(ErrorResultSchema.safeParse(missing.json()).success);
    assert.equal(missing.json().error.code, "WORKSPACE_NOT_FOUND");
    const bad = await api(t, "POST", "/v1/workspaces", { json: { name: "w", memory: 5 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json().error.code, "INVALID_ARGUMENT");
    const notJson = await api(t, "POST", "/v1/workspaces", { raw: Buffer.from("{"), headers: {} });
    assert.equal(notJson.status, 400);
    const route = await api(t, "GET", "/v2/nothing");
    assert.equal(route.status, 404);
    assert.equal(route.json().error.code, "ROUTE_NOT_FOUND");
    const egress = await api(t, "GET", "/v1/workspaces/nope/egress");
    assert.equal(egress.status, 404);
    const images = await api(t, "GET", "/v1/images");
    assert.deepEqual(images.json(), { images: [] });
    // A second daemon on the same socket is a conflict, not a takeover.
    await assert.rejects(startDaemon({ host: { stateDir } }), (e: unknown) => isMicroagentError(e) && e.code === "LISTEN_FAILED" && e.kind === "conflict");
  } finally {
    await d.close();
  }
  // A socket file nobody listens on (its daemon was SIGKILLed) is reclaimed; a file that is no socket is not touched.
  const stale = join(stateDir, "stale.sock");
  const killed = spawnSync(process.execPath, ["-e", `require("node:net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`]);
  assert.equal(killed.signal, "SIGKILL");
  assert.ok(statSync(stale).isSocket(), "the dead listener left its socket file");
  const plain = join(stateDir, "plain-file");
  await writeFile(plain, "keep me");
  await assert.rejects(startDaemon({ host: { stateDir }, socket: plain }), (e: unknown) => isMicroagentError(e) && e.code === "LISTEN_FAILED" && /not a socket/.test(e.message));
  assert.equal(readFileSync(plain, "utf8"), "keep me");
  const again = await startDaemon({ host: { stateDir }, socket: stale });
  try {
    assert.equal((await api({ socket: stale }, "GET", "/v1/workspaces")).status, 200);
  } finally {
    await again.close();
  }
});

test("server-http: TCP needs the bearer token; a non-loopback bind is refused without --listen-public", async () => {
  const stateDir = scratchDir("srv-tcp");
  await mkdir(stateDir, { recursive: true });
  await assert.rejects(
    startDaemon({ host: { stateDir }, listen: "0.0.0.0:0" }),
    (e: unknown) => isMicroagentError(e) && e.code === "LISTEN_REFUSED" && e.kind === "policy_denied" && /not a loopback address/.test(e.message),
  );
  const d = await startDaemon({ host: { stateDir }, listen: "127.0.0.1:0" });
  try {
    const tcp = d.addresses.tcp;
    assert.ok(tcp && tcp.port > 0);
    const token = readFileSync(join(stateDir, "api.token"), "utf8").trim();
    assert.equal(statSync(join(stateDir, "api.token")).mode & 0o777, 0o600);
    const none = await api({ tcp }, "GET", "/v1/workspaces");
    assert.equal(none.status, 401);
    assert.equal(none.headers["www-authenticate"], 'Bearer realm="microagent"');
    assert.equal(none.json().error.code, "UNAUTHORIZED");
    const wrong = await api({ tcp, token: `${token}x` }, "GET", "/v1/workspaces");
    assert.equal(wrong.status, 401);
    assert.equal((await api({ tcp }, "GET", "/openapi.json")).status, 401, "every route is behind the token, the document too");
    assert.equal((await api({ tcp }, "POST", "/mcp", { json: {} })).status, 401, "and /mcp");
    const ok = await api({ tcp, token }, "GET", "/v1/workspaces");
    assert.equal(ok.status, 200);
    // The socket beside it needs no token.
    assert.equal((await api({ socket: d.addresses.socket }, "GET", "/v1/workspaces")).status, 200);
  } finally {
    await d.close();
  }
});

test("server-http: `microagent serve --listen 0.0.0.0:PORT` is refused by the CLI with the error contract", async () => {
  const { runCli } = await import("../helpers/cli.ts");
  const stateDir = scratchDir("srv-cli");
  const r = await runCli(["--state-dir", stateDir, "--json", "serve", "--listen", "0.0.0.0:0"]);
  assert.equal(r.code, 1);
  const body = ErrorResultSchema.parse(JSON.parse(r.out));
  assert.deepEqual([body.error.code, body.error.kind], ["LISTEN_REFUSED", "policy_denied"]);
  assert.match(body.error.remediation, /--listen-public/);
});
