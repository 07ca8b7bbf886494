/**
 * The Connect protocol with the JSON codec, as envd speaks it to the `e2b` SDK (which builds its
 * transport with `useBinaryFormat: false`), so no protobuf runtime is needed:
 * - unary: `POST /<pkg>.<Service>/<Method>`, JSON body in, JSON body out; an error is an HTTP status
 *   with `{code, message}`;
 * - server streaming: `application/connect+json`, each message an envelope `flags(1) len(4, BE) json`,
 *   closed by an end-of-stream envelope (flags 0x02) holding `{}` or `{error: {code, message}}`.
 * Our errors keep their kind on the wire: `connectCode` maps a kind (or a code) to a Connect code.
 */
import { Buffer } from "node:buffer";
import { isMicroagentError, toMicroagentError, type ErrorKind, type MicroagentError } from "../../contract/errors.ts";

export type ConnectCode =
  | "canceled"
  | "unknown"
  | "invalid_argument"
  | "deadline_exceeded"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "resource_exhausted"
  | "failed_precondition"
  | "aborted"
  | "unimplemented"
  | "internal"
  | "unavailable"
  | "unauthenticated";

/** The HTTP status of a unary error, per the Connect protocol's table. */
const HTTP_STATUS: Record<ConnectCode, number> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  unauthenticated: 401,
};

const BY_KIND: Record<ErrorKind, ConnectCode> = {
  transient: "unavailable",
  permanent: "failed_precondition",
  conflict: "aborted",
  not_found: "not_found",
  resource_exhausted: "resource_exhausted",
  unsupported: "unimplemented",
  policy_denied: "permission_denied",
};

/** Codes whose Connect meaning is sharper than their kind's. */
const BY_CODE: Record<string, ConnectCode> = {
  INVALID_ARGUMENT: "invalid_argument",
  USAGE: "invalid_argument",
  E2B_BAD_REQUEST: "invalid_argument",
  E2B_PATH_EXISTS: "already_exists",
  E2B_NOT_A_FILE: "invalid_argument",
  E2B_NOT_A_DIRECTORY: "invalid_argument",
  E2B_STDIN_NOT_OPEN: "failed_precondition",
  E2B_UNAUTHORIZED: "unauthenticated",
  E2B_SANDBOX_NOT_FOUND: "not_found",
  INTERNAL: "internal",
};

export function connectCode(e: MicroagentError): ConnectCode {
  return BY_CODE[e.code] ?? BY_KIND[e.kind];
}

/** The Connect error body for any thrown value; the microagent code rides along in the message. */
export function connectError(e: unknown): { code: ConnectCode; message: string } {
  const err = isMicroagentError(e) ? e : toMicroagentError(e);
  return { code: connectCode(err), message: `${err.message} [${err.code}] ${err.remediation}` };
}

export function unaryErrorResponse(e: unknown): Response {
  const body = connectError(e);
  return new Response(JSON.stringify(body), { status: HTTP_STATUS[body.code], headers: { "content-type": "application/json" } });
}

const FLAG_END_STREAM = 0x02;
const FLAG_COMPRESSED = 0x01;

export function envelope(message: unknown, flags = 0): Uint8Array {
  const json = Buffer.from(JSON.stringify(message), "utf8");
  const out = Buffer.alloc(5 + json.length);
  out[0] = flags;
  out.writeUInt32BE(json.length, 1);
  json.copy(out, 5);
  return out;
}

export function endStream(error?: { code: ConnectCode; message: string }): Uint8Array {
  return envelope(error ? { error } : {}, FLAG_END_STREAM);
}

/** The single request message of a server-streaming call (one envelope, uncompressed). */
export function parseStreamRequest(body: Buffer): unknown {
  if (body.length < 5) return {};
  if ((body[0]! & FLAG_COMPRESSED) !== 0) throw new Error("compressed Connect envelopes are not supported");
  const len = body.readUInt32BE(1);
  if (body.length < 5 + len) throw new Error("truncated Connect envelope");
  return JSON.parse(body.subarray(5, 5 + len).toString("utf8") || "{}");
}

/**
 * Thrown by a stream's producer when what it streams is gone without an answer (the sandbox's VM
 * died under a running command): the response is cut instead of ended, as a dying E2B sandbox cuts
 * it, so the SDK probes /health, sees the sandbox gone and reports that (not a bogus exit code).
 */
export class StreamLost extends Error {}

/**
 * A server stream as a web Response: `run` gets `send` for messages and must resolve when the stream
 * is complete; a throw becomes the end-of-stream error. `onCancel` fires when the client goes away.
 */
export function streamResponse(run: (send: (message: unknown) => void, signal: AbortSignal) => Promise<void>): Response {
  const abort = new AbortController();
  let closed = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const send = (m: unknown) => {
        if (!closed) controller.enqueue(envelope(m));
      };
      run(send, abort.signal).then(
        () => finish(controller),
        (e) => {
          if (!(e instanceof StreamLost)) return finish(controller, connectError(e));
          if (closed) return;
          closed = true;
          controller.error(e);
        },
      );
    },
    cancel() {
      closed = true;
      abort.abort();
    },
  });
  function finish(controller: ReadableStreamDefaultController<Uint8Array>, error?: { code: ConnectCode; message: string }) {
    if (closed) return;
    closed = true;
    controller.enqueue(endStream(error));
    controller.close();
  }
  return new Response(stream, { status: 200, headers: { "content-type": "application/connect+json" } });
}
