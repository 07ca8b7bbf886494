/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the same zod schemas that validate the
 * requests and type the results (z.toJSONSchema, JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
 * It is served at /openapi.json and checked in as docs/openapi.json; a unit test fails when the two
 * differ (MICROAGENT_UPDATE_OPENAPI=1 rewrites the file).
 */
import { z } from "zod";
import {
  CreateJsonSchema,
  DeleteJsonSchema,
  DoctorJsonSchema,
  ErrorResultSchema,
  EventSchema,
  EventsJsonSchema,
  ExecJsonSchema,
  ImageJsonSchema,
  ImageListJsonSchema,
  ListJsonSchema,
  LogsJsonSchema,
  PauseJsonSchema,
  RunJsonSchema,
  StartJsonSchema,
  StatusJsonSchema,
  StopJsonSchema,
} from "../../contract/results.ts";
import { EgressListSchema } from "../common/host.ts";
import { CreateBodySchema, ExecBodySchema, FileWrittenSchema, PullBodySchema, RunBodySchema, TimeoutBodySchema } from "./schemas.ts";

/** The API's own version (of the /v1 contract), independent of the package version. */
export const API_VERSION = "1.0.0";

const SCHEMAS: Record<string, z.ZodType> = {
  CreateRequest: CreateBodySchema,
  ExecRequest: ExecBodySchema,
  TimeoutRequest: TimeoutBodySchema,
  PullRequest: PullBodySchema,
  RunRequest: RunBodySchema,
  Create: CreateJsonSchema,
  Start: StartJsonSchema,
  Stop: StopJsonSchema,
  Pause: PauseJsonSchema,
  Delete: DeleteJsonSchema,
  Status: StatusJsonSchema,
  List: ListJsonSchema,
  Exec: ExecJsonSchema,
  Event: EventSchema,
  Events: EventsJsonSchema,
  Logs: LogsJsonSchema,
  Egress: EgressListSchema,
  Image: ImageJsonSchema,
  ImageList: ImageListJsonSchema,
  Run: RunJsonSchema,
  Doctor: DoctorJsonSchema,
  FileWritten: FileWrittenSchema,
  Error: ErrorResultSchema,
};

const INPUTS = new Set(["CreateRequest", "ExecRequest", "TimeoutRequest", "PullRequest", "RunRequest"]);

type Json = Record<string, unknown>;
const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string, description: string): Json => ({ description, content: { "application/json": { schema: ref(name) } } });
const sseOr = (name: string, description: string, events: string): Json => ({
  description,
  content: { "application/json": { schema: ref(name) }, "text/event-stream": { schema: { type: "string", description: events } } },
});
const nameParam = { name: "name", in: "path", required: true, schema: { type: "string" }, description: "workspace name" };
const pathParam = { name: "path", in: "query", required: true, schema: { type: "string" }, description: "absolute path in the guest" };
const idemParam = { name: "Idempotency-Key", in: "header", required: false, schema: { type: "string" }, description: "names this request: a repeat returns the first result (header Idempotent-Replayed: true); the same key with another body is 422" };
const errors: Json = {
  "400": json("Error", "invalid request (INVALID_ARGUMENT names the field)"),
  "401": json("Error", "missing or wrong bearer token (TCP listeners)"),
  "404": json("Error", "not found (kind not_found)"),
  "409": json("Error", "conflict with the workspace's state (kind conflict)"),
  "422": json("Error", "the operation failed for good (kind permanent), or an Idempotency-Key reused with another body"),
  "429": json("Error", "a limit was reached (kind resource_exhausted)"),
  "501": json("Error", "not supported on this host or backend (kind unsupported)"),
  "503": json("Error", "temporary failure; retry (kind transient)"),
  default: json("Error", "any other failure: the error object of docs/output.md"),
};
const body = (name: string, required = true): Json => ({ required, content: { "application/json": { schema: ref(name) } } });
const op = (operationId: string, summary: string, extra: Json): Json => ({ operationId, summary, ...extra, responses: { ...(extra.responses as Json), ...errors } });

function schemaOf(name: string, schema: z.ZodType): Json {
  const s = z.toJSONSchema(schema, { target: "draft-2020-12", io: INPUTS.has(name) ? "input" : "output", unrepresentable: "any" }) as Json;
  delete s.$schema;
  return s;
}

export function openApiDocument(): Json {
  return {
    openapi: "3.1.0",
    info: {
      title: "microagent HTTP API",
      version: API_VERSION,
      description: "Workspaces in microVMs over HTTP: the same operations and result shapes as the CLI's --json. See docs/api.md.",
    },
    servers: [{ url: "http://localhost", description: "the daemon's Unix socket (default <state-dir>/microagent.sock), or --listen 127.0.0.1:PORT" }],
    security: [{}, { bearer: [] }],
    paths: {
      "/v1/workspaces": {
        get: op("listWorkspaces", "list workspaces", { responses: { "200": json("List", "every workspace, reconciled") } }),
        post: op("createWorkspace", "create a workspace (state prepared)", { parameters: [idemParam], requestBody: body("CreateRequest"), responses: { "201": json("Create", "created") } }),
      },
      "/v1/workspaces/{name}": {
        get: op("getWorkspace", "a workspace's status", { parameters: [nameParam], responses: { "200": json("Status", "status") } }),
        delete: op("deleteWorkspace", "delete a workspace (refused while it runs unless ?force=true)", {
          parameters: [nameParam, { name: "force", in: "query", required: false, schema: { type: "boolean" }, description: "kill a running VM first" }],
          responses: { "200": json("Delete", "deleted") },
        }),
      },
      "/v1/workspaces/{name}/start": { post: op("startWorkspace", "boot a workspace", { parameters: [nameParam], requestBody: body("TimeoutRequest", false), responses: { "200": json("Start", "running") } }) },
      "/v1/workspaces/{name}/halt": { post: op("haltWorkspace", "halt (guest powers off; disk kept)", { parameters: [nameParam], requestBody: body("TimeoutRequest", false), responses: { "200": json("Stop", "halted") } }) },
      "/v1/workspaces/{name}/stop": { post: op("stopWorkspace", "stop (graceful, then forced)", { parameters: [nameParam], requestBody: body("TimeoutRequest", false), responses: { "200": json("Stop", "stopped") } }) },
      "/v1/workspaces/{name}/pause": { post: op("pauseWorkspace", "freeze the vCPUs (memory, disk, flows and channel kept)", { parameters: [nameParam], responses: { "200": json("Pause", "paused") } }) },
      "/v1/workspaces/{name}/resume": { post: op("resumeWorkspace", "thaw a paused workspace", { parameters: [nameParam], responses: { "200": json("Pause", "running") } }) },
      "/v1/workspaces/{name}/kill": { post: op("killWorkspace", "kill the VM now", { parameters: [nameParam], responses: { "200": json("Stop", "killed") } }) },
      "/v1/workspaces/{name}/exec": {
        post: op("execInWorkspace", "run a command in a running workspace", {
          parameters: [nameParam],
          requestBody: body("ExecRequest"),
          responses: { "200": sseOr("Exec", "the exec.v1 result; with Accept: text/event-stream, events as they happen", "events `stdout` and `stderr` ({data: base64}), then `exit` (the Exec result with empty stdout/stderr) or `error` (the Error object)") },
        }),
      },
      "/v1/workspaces/{name}/files": {
        get: op("readFile", "read a file in the guest", { parameters: [nameParam, pathParam], responses: { "200": { description: "the file's bytes", content: { "application/octet-stream": { schema: { type: "string", contentMediaType: "application/octet-stream" } } } } } }),
        put: op("writeFile", "create or replace a file in the guest (the parent directory must exist)", {
          parameters: [nameParam, pathParam],
          requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", contentMediaType: "application/octet-stream" } } } },
          responses: { "200": json("FileWritten", "written") },
        }),
      },
      "/v1/workspaces/{name}/logs": { get: op("workspaceLogs", "the guest's serial console", { parameters: [nameParam], responses: { "200": sseOr("Logs", "the log so far; with Accept: text/event-stream, followed", "events `logs` ({logs: text}) until the workspace stops running") } }) },
      "/v1/workspaces/{name}/events": {
        get: op("workspaceEvents", "the lifecycle history", {
          parameters: [nameParam, { name: "Last-Event-ID", in: "header", required: false, schema: { type: "string" }, description: "resume a stream after this event id" }],
          responses: { "200": sseOr("Events", "the history; with Accept: text/event-stream, followed", "events `event` (an Event), `id:` its 1-based position, until the workspace settles") },
        }),
      },
      "/v1/workspaces/{name}/egress": { get: op("workspaceEgress", "the egress audit records", { parameters: [nameParam], responses: { "200": json("Egress", "records, oldest first (empty without a log)") } }) },
      "/v1/run": { post: op("run", "one command in a scratch workspace", { parameters: [idemParam], requestBody: body("RunRequest"), responses: { "200": json("Run", "the run and its exit code") } }) },
      "/v1/images": {
        get: op("listImages", "local images", { responses: { "200": json("ImageList", "images") } }),
        post: op("pullImage", "pull an image", { requestBody: body("PullRequest"), responses: { "200": sseOr("Image", "the pulled image; with Accept: text/event-stream, progress", "events `progress` (pull progress), then `result` (an Image) or `error`") } }),
      },
      "/v1/host": { get: op("hostDoctor", "the host's readiness (doctor)", { responses: { "200": json("Doctor", "checks and verdict") } }) },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "required on TCP listeners; the Unix socket needs none (its mode is the check)" } },
      schemas: Object.fromEntries(Object.entries(SCHEMAS).map(([n, s]) => [n, schemaOf(n, s)])),
    },
  };
}
