/**
 * Reading one of our JSON files (a manifest, an index, a record) the one way: read, parse, check
 * against its zod schema. Only the error differs by area, so the caller passes a function that
 * turns the problem (which file, what is wrong, which field) into its own corrupt-file error.
 */
import type { z } from "zod";
import { readTextIfExists } from "./fs.ts";

export interface JsonFileProblem {
  path: string;
  /** "json": the text does not parse; "schema": it parses but does not match. */
  kind: "json" | "schema";
  /** The dotted path of the first field that does not match ("" for the top level or for "json"). */
  field: string;
  /** What is wrong, in words: `not JSON (Unexpected token ...)` or `field a.b: expected string`. */
  problem: string;
  cause?: unknown;
}

/**
 * The parsed, checked content of `path`, or undefined when the file does not exist (the caller
 * decides what a missing file means). Other read errors propagate; a damaged file becomes
 * `corrupt(problem)`, which must return the error to throw.
 */
export async function readJsonFile<S extends z.ZodType>(path: string, schema: S, corrupt: (p: JsonFileProblem) => Error): Promise<z.output<S> | undefined> {
  const text = await readTextIfExists(path);
  return text === undefined ? undefined : parseJsonText(text, path, schema, corrupt);
}

/** The same check for text already read (`path` names it in the problem). */
export function parseJsonText<S extends z.ZodType>(text: string, path: string, schema: S, corrupt: (p: JsonFileProblem) => Error): z.output<S> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw corrupt({ path, kind: "json", field: "", problem: `not JSON (${(e as Error).message})`, cause: e });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.map(String).join(".") ?? "";
    throw corrupt({ path, kind: "schema", field, problem: `${field === "" ? "" : `field ${field}: `}${issue?.message ?? "invalid"}` });
  }
  return parsed.data;
}
