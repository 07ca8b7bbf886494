/**
 * The control protocol as JSON Schema (draft 2020-12), generated from the op table with zod 4's
 * `z.toJSONSchema`, so the published file (`docs/control-protocol.schema.json`) can only say what
 * the code checks. A unit test fails when the two drift apart; `npm run -s schema:control` rewrites
 * the file.
 *
 * The document validates a request line (the first line of a connection) at its root, and names
 * every other shape under `$defs`: each op's request fields and result, the lines a client sends
 * after its request, and the server's reply lines. `x-ops` lists the ops with their summary and
 * pointers into `$defs`.
 */
import { z } from "zod";
import { CONTROL_PROTOCOL_VERSION, ConsoleInputSchema, ExecInputSchema, MAX_CHUNK_BYTES, MAX_INLINE_OUTPUT_BYTES, MAX_LINE_BYTES, MAX_STDIN_CHUNK_BYTES } from "./protocol.ts";
import { ErrorObjectSchema, OPS, OP_NAMES, ReplySchema, RequestSchema } from "./ops.ts";

type Json = Record<string, unknown>;

/**
 * Each shape as its decoder accepts it (zod's input side): defaulted fields are optional, and a
 * result object may carry fields this version does not know (the client drops them), while the
 * request lines stay strict (the server refuses unknown fields).
 */
function jsonSchema(schema: z.ZodType): Json {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "throw" });
  return rest;
}

function defName(op: string, part: string): string {
  return `${op.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase())}${part}`;
}

export function controlProtocolJsonSchema(): Json {
  const defs: Json = {
    Request: jsonSchema(RequestSchema),
    Reply: jsonSchema(ReplySchema),
    ErrorObject: jsonSchema(ErrorObjectSchema),
    ExecInput: jsonSchema(ExecInputSchema),
    ConsoleInput: jsonSchema(ConsoleInputSchema),
  };
  const ops: Json = {};
  for (const op of OP_NAMES) {
    const spec = OPS[op];
    defs[defName(op, "Request")] = jsonSchema(spec.request);
    defs[defName(op, "Result")] = jsonSchema(spec.result);
    ops[op] = {
      summary: spec.summary,
      request: { $ref: `#/$defs/${defName(op, "Request")}` },
      result: { $ref: `#/$defs/${defName(op, "Result")}` },
      ...("input" in spec ? { input: { $ref: `#/$defs/${spec.input === ExecInputSchema ? "ExecInput" : "ConsoleInput"}` } } : {}),
      ...("streams" in spec ? { streams: spec.streams } : {}),
      ...("opened" in spec ? { opened: spec.opened } : {}),
    };
  }
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "microagent control protocol (host CLI/library <-> workspace supervisor)",
    description:
      "Newline-delimited JSON over the workspace's control Unix socket, one request per connection. The root validates the first line a client sends; $defs names every other line and each op's request fields and result. See docs/control-protocol.md.",
    $ref: "#/$defs/Request",
    "x-version": CONTROL_PROTOCOL_VERSION,
    "x-limits": {
      maxLineBytes: MAX_LINE_BYTES,
      maxChunkBytes: MAX_CHUNK_BYTES,
      maxStdinChunkBytes: MAX_STDIN_CHUNK_BYTES,
      maxInlineOutputBytes: MAX_INLINE_OUTPUT_BYTES,
    },
    "x-ops": ops,
    $defs: defs,
  };
}

/** The published file's exact text. */
export function controlProtocolJsonSchemaText(): string {
  return `${JSON.stringify(controlProtocolJsonSchema(), null, 2)}\n`;
}
