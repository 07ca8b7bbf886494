/** `registry login/logout/list` as library calls over the credentials file. */
import { ImageErrors } from "./errors.ts";
import { RegistryClient, insecureRegistriesFromEnv } from "./client.ts";
import { authFilePath, decodeEntry, readAuthFile, writeAuthFile, type CredentialStoreOptions } from "./credentials.ts";
import { defaultStateDir } from "./store.ts";
import { normalizeRegistryName } from "./ref.ts";

export interface RegistryLoginOptions extends CredentialStoreOptions {
  username: string;
  password: string;
  /** Check the credentials against the registry before saving them. Default true. */
  verify?: boolean;
  insecureRegistries?: string[];
}

export interface RegistryEntry {
  registry: string;
  username: string | undefined;
  /** The file the entry lives in. */
  authFile: string;
}

function fileFor(options: CredentialStoreOptions): string {
  return authFilePath(options.stateDir ?? defaultStateDir(), options);
}

export async function registryLogin(registry: string, options: RegistryLoginOptions): Promise<RegistryEntry> {
  const name = normalizeRegistryName(registry);
  if (!options.username) throw ImageErrors.IMAGE_REF_INVALID({ message: "a username is required", remediation: "Pass -u USER." });
  if (!options.password) {
    throw ImageErrors.IMAGE_REF_INVALID({ message: "an empty password was given", remediation: "Pipe the password or token into --password-stdin." });
  }
  if (options.verify !== false) {
    const client = new RegistryClient(name, {
      credentials: { username: options.username, password: options.password },
      insecureRegistries: options.insecureRegistries ?? insecureRegistriesFromEnv(options.env),
    });
    await client.ping();
  }
  const path = fileFor(options);
  const file = await readAuthFile(path);
  // One entry per registry: drop aliases of the same name (https://index.docker.io/v1/ ...).
  for (const key of Object.keys(file.auths)) {
    try {
      if (normalizeRegistryName(key) === name) delete file.auths[key];
    } catch {
      // keys we can't parse are left alone
    }
  }
  file.auths[name] = { auth: Buffer.from(`${options.username}:${options.password}`).toString("base64") };
  await writeAuthFile(path, file);
  return { registry: name, username: options.username, authFile: path };
}

export async function registryLogout(registry: string, options: CredentialStoreOptions = {}): Promise<{ registry: string; authFile: string }> {
  const name = normalizeRegistryName(registry);
  const path = fileFor(options);
  const file = await readAuthFile(path);
  let found = false;
  for (const key of Object.keys(file.auths)) {
    try {
      if (normalizeRegistryName(key) !== name) continue;
    } catch {
      continue;
    }
    delete file.auths[key];
    found = true;
  }
  if (!found) throw ImageErrors.REGISTRY_NOT_LOGGED_IN({ message: `not logged in to ${name} (credentials file ${path})`, details: { registry: name, authFile: path } });
  await writeAuthFile(path, file);
  return { registry: name, authFile: path };
}

/** Registries with stored credentials (usernames only; passwords never leave the file). */
export async function registryList(options: CredentialStoreOptions = {}): Promise<RegistryEntry[]> {
  const path = fileFor(options);
  const file = await readAuthFile(path);
  return Object.entries(file.auths)
    .map(([key, entry]) => {
      let registry = key;
      try {
        registry = normalizeRegistryName(key);
      } catch {
        // show the key as written
      }
      return { registry, username: decodeEntry(entry)?.username, authFile: path };
    })
    .sort((a, b) => a.registry.localeCompare(b.registry));
}
