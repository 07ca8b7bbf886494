/**
 * Registry credentials: `<state-dir>/auth.json` (or `$REGISTRY_AUTH_FILE`), docker's
 * `{"auths": {"host": {"auth": base64("user:pass")}}}` shape so the file is familiar. Written
 * atomically with mode 0600. We never read Docker's config or credential helpers.
 */
import { chmod } from "node:fs/promises";
import { dirname, join } from "node:path";
import { z } from "zod";
import { ensureDir, writeFileAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { ImageErrors } from "./errors.ts";
import { normalizeRegistryName } from "./ref.ts";

export const AuthEntrySchema = z
  .object({
    auth: z.string().optional(),
    username: z.string().optional(),
    password: z.string().optional(),
  })
  .loose();

export const AuthFileSchema = z
  .object({
    auths: z.record(z.string(), AuthEntrySchema).default({}),
  })
  .loose();
export type AuthFile = z.infer<typeof AuthFileSchema>;

export interface Credentials {
  username: string;
  password: string;
}

export interface CredentialStoreOptions {
  /** State directory (default ~/.microagent); auth.json lives there. */
  stateDir?: string;
  /** Explicit credentials file; default `$REGISTRY_AUTH_FILE`, else `<stateDir>/auth.json`. */
  authFile?: string;
  env?: NodeJS.ProcessEnv;
}

export function authFilePath(stateDir: string, options: Pick<CredentialStoreOptions, "authFile" | "env"> = {}): string {
  const env = options.env ?? process.env;
  return options.authFile ?? (env.REGISTRY_AUTH_FILE || join(stateDir, "auth.json"));
}

export async function readAuthFile(path: string): Promise<AuthFile> {
  const file = await readJsonFile(path, AuthFileSchema, (p) =>
    ImageErrors.REGISTRY_AUTH_FILE_INVALID({
      message: p.kind === "json" ? `credentials file ${path} is not valid JSON` : `credentials file ${path} does not match {"auths": {"host": {"auth": "..."}}}: ${p.problem}`,
      cause: p.cause,
      details: { path, ...(p.field ? { field: p.field } : {}) },
    }),
  );
  return file ?? { auths: {} };
}

export async function writeAuthFile(path: string, file: AuthFile): Promise<void> {
  await ensureDir(dirname(path));
  await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, 0o600);
  await chmod(path, 0o600);
}

/** Decode one entry; undefined when it holds no usable username/password. */
export function decodeEntry(entry: z.infer<typeof AuthEntrySchema>): Credentials | undefined {
  if (entry.auth) {
    const text = Buffer.from(entry.auth, "base64").toString("utf8");
    const sep = text.indexOf(":");
    if (sep <= 0) return undefined;
    return { username: text.slice(0, sep), password: text.slice(sep + 1) };
  }
  if (entry.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password };
  return undefined;
}

/** Find credentials for a registry name (keys are normalized, so `https://index.docker.io/v1/` matches docker.io). */
export function lookupCredentials(file: AuthFile, registry: string): Credentials | undefined {
  const want = normalizeRegistryName(registry);
  for (const [key, entry] of Object.entries(file.auths)) {
    let name: string;
    try {
      name = normalizeRegistryName(key);
    } catch {
      continue;
    }
    if (name === want) return decodeEntry(entry);
  }
  return undefined;
}
