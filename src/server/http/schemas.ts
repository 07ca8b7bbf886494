/**
 * Request bodies of the HTTP API: the library's request schemas (src/api/requests.ts) plus what the
 * URL cannot carry. The OpenAPI document is generated from these and the result schemas, so the
 * published contract is the validated one.
 */
import { z } from "zod";
import { ArchSchema } from "../../contract/backend.ts";
import { ExecRequestSchema, RunRequestSchema, WorkspaceRequestSchema } from "../../api/requests.ts";

export const CreateBodySchema = WorkspaceRequestSchema.extend({ name: z.string().min(1) });
export const ExecBodySchema = ExecRequestSchema.extend({
  argv: z.array(z.string()).min(1),
  /** Bytes fed to the command's stdin, base64, then EOF. */
  stdin: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/).optional(),
});
export const TimeoutBodySchema = z.strictObject({ timeoutMs: z.number().int().positive().optional() });
export const PullBodySchema = z.strictObject({ ref: z.string().min(1), arch: ArchSchema.optional() });
export const RunBodySchema = RunRequestSchema;
export const FileWrittenSchema = z.strictObject({ workspace: z.string(), path: z.string(), sizeBytes: z.number().int() });
