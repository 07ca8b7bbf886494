/**
 * A minimal OCI distribution v2 client: GET/HEAD of manifests and blobs with the registry auth
 * dance (anonymous, basic, and the `WWW-Authenticate: Bearer` token flow), manual redirects that
 * drop credentials across origins, and the plain-HTTP policy (loopback or explicitly listed only).
 */
import type { Readable } from "node:stream";
import type { Dispatcher, request as undiciRequestFn } from "undici";

// undici costs ~60 ms to load: load it on the first registry request, not on every CLI start.
type UndiciRequest = typeof undiciRequestFn;
let undiciRequest: UndiciRequest | undefined;
const request = (async (...args: Parameters<UndiciRequest>) => {
  undiciRequest ??= (await import("undici")).request;
  return undiciRequest(...args);
}) as UndiciRequest;
import { packageVersion } from "../version.ts";
import { parseWwwAuthenticate, type AuthChallenge } from "./challenge.ts";
import type { Credentials } from "./credentials.ts";
import { ImageErrors } from "./errors.ts";
import { statusError, transportError } from "./http-errors.ts";
import { apiHost } from "./ref.ts";

export interface RegistryClientOptions {
  credentials?: Credentials | undefined;
  /** host[:port] names allowed over plain HTTP besides loopback (MICROAGENT_INSECURE_REGISTRIES). */
  insecureRegistries?: readonly string[];
  /** Time to wait for response headers, ms. */
  headersTimeoutMs?: number;
  /** Max idle time between body chunks, ms. */
  bodyTimeoutMs?: number;
  signal?: AbortSignal | undefined;
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & Dispatcher.ResponseData["body"];
}

/** Read MICROAGENT_INSECURE_REGISTRIES (comma-separated host[:port]). */
export function insecureRegistriesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.MICROAGENT_INSECURE_REGISTRIES ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/** 127.0.0.0/8, ::1 and localhost, with or without a port. */
export function isLoopbackHost(hostPort: string): boolean {
  let host = hostPort.toLowerCase();
  if (host.startsWith("[")) host = host.slice(1, host.indexOf("]"));
  else if (host.split(":").length === 2) host = host.slice(0, host.indexOf(":"));
  if (host === "localhost" || host === "::1") return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export function plainHttpAllowed(hostPort: string, insecure: readonly string[]): boolean {
  const h = hostPort.toLowerCase();
  return isLoopbackHost(h) || insecure.includes(h);
}

const MAX_REDIRECTS = 5;
const MAX_ERROR_BODY = 64 * 1024;

export class RegistryClient {
  readonly registry: string;
  readonly baseUrl: string;
  private readonly options: RegistryClientOptions;
  private readonly insecure: readonly string[];
  /** scope -> bearer token */
  private readonly tokens = new Map<string, string>();
  private scheme: "bearer" | "basic" | undefined;
  private challenge: AuthChallenge | undefined;

  constructor(registry: string, options: RegistryClientOptions = {}) {
    this.registry = registry;
    this.options = options;
    this.insecure = options.insecureRegistries ?? insecureRegistriesFromEnv();
    const host = apiHost(registry);
    this.baseUrl = `${plainHttpAllowed(host, this.insecure) ? "http" : "https"}://${host}`;
  }

  /**
   * GET (or HEAD) `/v2/<repo>/<kind>/<reference>`, authenticating as needed. Returns the final
   * 2xx/206 response; any other status is translated (and its body drained) before it gets here.
   */
  async fetch(
    repository: string,
    path: string,
    opts: { method?: "GET" | "HEAD"; accept?: readonly string[]; headers?: Record<string, string>; what: string; blob?: boolean; okStatuses?: readonly number[] },
  ): Promise<RegistryResponse> {
    const scope = `repository:${repository}:pull`;
    const url = `${this.baseUrl}/v2/${repository}/${path}`;
    const headers: Record<string, string> = { "user-agent": `microagent/${packageVersion()}`, ...(opts.headers ?? {}) };
    if (opts.accept) headers.accept = opts.accept.join(", ");
    let res = await this.send(url, opts.method ?? "GET", headers, scope, opts.what);
    if (res.status === 401) {
      const challenges = parseWwwAuthenticate(headerString(res.headers["www-authenticate"]));
      await drain(res);
      await this.authenticate(challenges, scope, opts.what);
      res = await this.send(url, opts.method ?? "GET", headers, scope, opts.what);
    }
    const ok = opts.okStatuses ?? [200];
    if (!ok.includes(res.status)) {
      const body = opts.method === "HEAD" ? "" : await readBounded(res);
      throw statusError(res.status, { what: opts.what, registry: this.registry, body, blob: opts.blob ?? false });
    }
    return res;
  }

  /**
   * Check that the registry accepts our credentials: `GET /v2/`, answering its challenge (a token
   * with no repository scope for Bearer, the credentials themselves for Basic).
   */
  async ping(): Promise<void> {
    const what = "the API root /v2/";
    const url = `${this.baseUrl}/v2/`;
    const headers = { "user-agent": `microagent/${packageVersion()}` };
    let res = await this.send(url, "GET", headers, "", what);
    if (res.status === 401) {
      const challenges = parseWwwAuthenticate(headerString(res.headers["www-authenticate"]));
      await drain(res);
      await this.authenticate(challenges, "", what);
      res = await this.send(url, "GET", headers, "", what);
    }
    const body = await readBounded(res);
    if (res.status !== 200) throw statusError(res.status, { what, registry: this.registry, body });
  }

  private authHeader(scope: string): string | undefined {
    if (this.scheme === "bearer") {
      const token = this.tokens.get(scope);
      return token ? `Bearer ${token}` : undefined;
    }
    if (this.scheme === "basic" && this.options.credentials) {
      const { username, password } = this.options.credentials;
      return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
    }
    return undefined;
  }

  /** One request with redirects followed by hand: credentials only go to the registry's own origin. */
  private async send(url: string, method: "GET" | "HEAD", headers: Record<string, string>, scope: string, what: string): Promise<RegistryResponse> {
    let current = new URL(url);
    const origin = current.origin;
    for (let hop = 0; ; hop++) {
      const h = { ...headers };
      const auth = current.origin === origin ? this.authHeader(scope) : undefined;
      if (auth) h.authorization = auth;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(current, {
          method,
          headers: h,
          signal: this.options.signal,
          headersTimeout: this.options.headersTimeoutMs ?? 30_000,
          bodyTimeout: this.options.bodyTimeoutMs ?? 60_000,
        });
      } catch (e) {
        throw transportError(e, this.registry, what);
      }
      const location = headerString(res.headers.location);
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && location) {
        await drainBody(res.body);
        if (hop >= MAX_REDIRECTS) {
          throw ImageErrors.REGISTRY_PROTOCOL({ message: `registry ${this.registry} redirected ${what} more than ${MAX_REDIRECTS} times` });
        }
        const next = new URL(location, current);
        this.checkScheme(next, what);
        current = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body as RegistryResponse["body"] };
    }
  }

  private checkScheme(url: URL, what: string): void {
    if (url.protocol === "https:") return;
    if (url.protocol === "http:" && plainHttpAllowed(url.host, this.insecure)) return;
    throw ImageErrors.REGISTRY_INSECURE_REFUSED({
      message: `refusing plain HTTP to ${url.host} (${what}) from registry ${this.registry}`,
      remediation: `Only loopback registries use plain HTTP; add ${url.host} to MICROAGENT_INSECURE_REGISTRIES if it is on a trusted network.`,
      details: { url: url.origin },
    });
  }

  private async authenticate(challenges: AuthChallenge[], scope: string, what: string): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basic = challenges.find((c) => c.scheme === "basic");
    if (bearer) {
      this.scheme = "bearer";
      this.challenge = bearer;
      this.tokens.set(scope, await this.fetchToken(bearer, scope, what));
      return;
    }
    if (basic && this.options.credentials) {
      if (this.scheme === "basic") throw statusError(401, { what, registry: this.registry });
      this.scheme = "basic";
      return;
    }
    throw statusError(401, { what, registry: this.registry });
  }

  private async fetchToken(challenge: AuthChallenge, scope: string, what: string): Promise<string> {
    const realm = challenge.params.realm;
    if (!realm) throw ImageErrors.REGISTRY_PROTOCOL({ message: `registry ${this.registry} sent a Bearer challenge without a realm` });
    let url: URL;
    try {
      url = new URL(realm);
    } catch (e) {
      throw ImageErrors.REGISTRY_PROTOCOL({ message: `registry ${this.registry} sent an invalid token realm '${realm}'`, cause: e });
    }
    this.checkScheme(url, "a token");
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    if (scope) url.searchParams.set("scope", scope);
    const headers: Record<string, string> = { "user-agent": `microagent/${packageVersion()}`, accept: "application/json" };
    if (this.options.credentials) {
      const { username, password } = this.options.credentials;
      headers.authorization = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: "GET", headers, signal: this.options.signal, headersTimeout: this.options.headersTimeoutMs ?? 30_000 });
    } catch (e) {
      throw transportError(e, url.host, `a token for ${what}`);
    }
    const text = await readBoundedBody(res.body);
    if (res.statusCode !== 200) {
      throw statusError(res.statusCode, { what: `a token for ${what} from ${url.host}`, registry: this.registry, body: text });
    }
    let token: unknown;
    try {
      const parsed = JSON.parse(text) as { token?: unknown; access_token?: unknown };
      token = parsed.token ?? parsed.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== "string" || token === "") {
      throw ImageErrors.REGISTRY_PROTOCOL({ message: `token service ${url.host} answered without a token` });
    }
    return token;
  }

  /** The challenge seen last (for diagnostics). @internal */
  get lastChallenge(): AuthChallenge | undefined {
    return this.challenge;
  }
}

export function headerString(v: string | string[] | undefined): string {
  return Array.isArray(v) ? v.join(", ") : (v ?? "");
}

async function drainBody(body: Dispatcher.ResponseData["body"]): Promise<void> {
  try {
    await body.dump({ limit: MAX_ERROR_BODY });
  } catch {
    // the connection is dropped instead: fine
  }
}

async function drain(res: RegistryResponse): Promise<void> {
  await drainBody(res.body);
}

async function readBoundedBody(body: Dispatcher.ResponseData["body"]): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      const b = chunk as Buffer;
      if (total + b.length > MAX_ERROR_BODY) {
        chunks.push(b.subarray(0, MAX_ERROR_BODY - total));
        body.destroy();
        break;
      }
      chunks.push(b);
      total += b.length;
    }
  } catch {
    // partial body is fine for an error message
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function readBounded(res: RegistryResponse): Promise<string> {
  return readBoundedBody(res.body);
}

/** Read a JSON document (manifest) fully, refusing bodies bigger than `maxBytes`. */
export async function readBodyLimited(res: RegistryResponse, maxBytes: number, what: string): Promise<Buffer> {
  // A declared length over the cap is refused at once, without waiting for a body that may never
  // come (a registry announcing 10 GiB and then stalling held a pull for the whole body timeout).
  const lengthHeader = headerString(res.headers["content-length"]);
  const declared = /^[0-9]+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  if (declared !== undefined && declared > maxBytes) {
    res.body.destroy();
    throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what} declares ${declared} bytes (Content-Length); refusing more than ${maxBytes}` });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    const b = chunk as Buffer;
    total += b.length;
    if (total > maxBytes) {
      res.body.destroy();
      throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what} is larger than ${maxBytes} bytes; refusing it` });
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
