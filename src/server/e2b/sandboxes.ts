/**
 * The sandbox table: one E2B sandbox is one microagent workspace (`e2b-<id>`), created and booted
 * on `create`, killed and deleted on `kill` or when its timeout passes. The table lives in this
 * process (E2B sandboxes are ephemeral); a restarted server starts empty and the workspaces of the
 * old one stay on disk under their `e2b-` names until deleted.
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { Workspace } from "../../api/workspace.ts";
import type { HostOptions, WorkspaceRequest } from "../../api/requests.ts";
import { isMicroagentError } from "../../contract/errors.ts";
import type { NetworkMode } from "../../workspace/manifest.ts";
import { E2bErrors } from "./errors.ts";
import { ProcessTable } from "./processes.ts";

/** The envd version whose features this server implements: stdin flag (0.3.0), default user (0.4.0), closeStdin (0.5.2), octet-stream upload (0.5.7). */
export const ENVD_VERSION = "0.5.7";
export const CLIENT_ID = "microagent";
const DEFAULT_TIMEOUT_S = 300;
/** Longest timeout accepted (E2B's own ceiling is 24 h). */
const MAX_TIMEOUT_S = 24 * 3600;

export const NewSandboxSchema = z.looseObject({
  templateID: z.string().min(1),
  timeout: z.number().int().nonnegative().optional(),
  metadata: z.record(z.string(), z.string()).nullish(),
  envVars: z.record(z.string(), z.string()).nullish(),
  autoPause: z.boolean().nullish(),
});
export type NewSandbox = z.infer<typeof NewSandboxSchema>;

export interface SandboxConfig {
  host: HostOptions;
  /** Template aliases: name -> image reference. Any other template ID is taken as an image reference. */
  templates: Record<string, string>;
  network: NetworkMode;
  resources?: WorkspaceRequest["resources"];
  log?: (line: string) => void;
}

export interface Sandbox {
  id: string;
  workspace: Workspace;
  templateId: string;
  image: string;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  startedAt: Date;
  endAt: Date;
  timer: NodeJS.Timeout | undefined;
  /** envd's access token: every data-plane request must carry it as X-Access-Token. */
  accessToken: string;
  processes: ProcessTable;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  /**
   * `paused`: the VM's vCPUs are frozen with its memory kept (E2B's pause with memory); `halted`: the
   * guest was powered off with its disk kept (pause with `memory: false`; a resume boots it again).
   * Neither times out: E2B keeps paused sandboxes until they are resumed or killed.
   */
  state: "running" | "paused" | "halted";
}

export class SandboxTable {
  readonly #config: SandboxConfig;
  readonly #sandboxes = new Map<string, Sandbox>();
  /** Creates in flight: shutdown waits for them, then kills what they made. */
  readonly #creating = new Set<Promise<unknown>>();

  constructor(config: SandboxConfig) {
    this.#config = config;
  }

  get(id: string): Sandbox {
    const sb = this.#sandboxes.get(id);
    if (!sb) throw E2bErrors.E2B_SANDBOX_NOT_FOUND({ message: `sandbox ${id} does not exist (killed, timed out, or never created here)`, details: { sandboxID: id } });
    return sb;
  }

  has(id: string): boolean {
    return this.#sandboxes.has(id);
  }

  list(): Sandbox[] {
    return [...this.#sandboxes.values()].sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime());
  }

  async create(req: NewSandbox): Promise<Sandbox> {
    const p = this.#create(req);
    this.#creating.add(p);
    try {
      return await p;
    } finally {
      this.#creating.delete(p);
    }
  }

  async #create(req: NewSandbox): Promise<Sandbox> {
    const image = this.#config.templates[req.templateID] ?? req.templateID;
    const id = randomBytes(10).toString("hex");
    const name = `e2b-${id}`;
    const envs = req.envVars ?? {};
    this.#config.log?.(`sandbox ${id}: creating workspace ${name} from ${image}`);
    const t0 = performance.now();
    const created = await Workspace.create(
      name,
      { image, network: this.#config.network, ...(this.#config.resources ? { resources: this.#config.resources } : {}) },
      this.#config.host,
    );
    const ws = created;
    try {
      const t1 = performance.now();
      await ws.start();
      const t2 = performance.now();
      const now = new Date();
      const sb: Sandbox = {
        id,
        workspace: ws,
        templateId: req.templateID,
        image,
        metadata: req.metadata ?? {},
        envs,
        startedAt: now,
        endAt: now,
        timer: undefined,
        accessToken: randomBytes(24).toString("base64url"),
        processes: new ProcessTable(ws),
        cpuCount: created.created.resources.cpus,
        memoryMB: created.created.resources.memoryMib,
        diskSizeMB: created.created.resources.sizeMib,
        state: "running",
      };
      this.#sandboxes.set(id, sb);
      this.setTimeout(sb, req.timeout ?? DEFAULT_TIMEOUT_S);
      this.#config.log?.(`sandbox ${id}: running after ${Math.round(t2 - t0)} ms (create ${Math.round(t1 - t0)} ms, boot ${Math.round(t2 - t1)} ms), timeout ${req.timeout ?? DEFAULT_TIMEOUT_S}s`);
      return sb;
    } catch (e) {
      await ws.delete({ force: true }).catch(() => {});
      throw e;
    }
  }

  /** Reset the sandbox's end time to now + `seconds`; at that time it is killed (E2B's auto-kill). */
  setTimeout(sb: Sandbox, seconds: number): void {
    const s = Math.min(Math.max(seconds, 0), MAX_TIMEOUT_S);
    if (sb.timer) clearTimeout(sb.timer);
    sb.endAt = new Date(Date.now() + s * 1000);
    sb.timer = setTimeout(() => {
      this.#config.log?.(`sandbox ${sb.id}: timeout reached, killing`);
      void this.kill(sb.id).catch((e) => this.#config.log?.(`sandbox ${sb.id}: kill after timeout failed: ${isMicroagentError(e) ? e.message : String(e)}`));
    }, s * 1000);
    sb.timer.unref();
  }

  /**
   * Pause a running sandbox: false when it was not running (E2B answers 409 and the SDK returns
   * false). With `keepMemory` (the default) the vCPUs are frozen and a resume continues every
   * process; without it the guest is halted and a resume boots it from its disk.
   */
  async pause(sb: Sandbox, keepMemory: boolean): Promise<boolean> {
    if (sb.state !== "running") return false;
    if (sb.timer) clearTimeout(sb.timer);
    sb.timer = undefined;
    if (keepMemory) await sb.workspace.pause();
    else await sb.workspace.halt();
    sb.state = keepMemory ? "paused" : "halted";
    this.#config.log?.(`sandbox ${sb.id}: ${keepMemory ? "paused (memory kept)" : "halted (disk kept)"}`);
    return true;
  }

  /** Resume a paused or halted sandbox with a new timeout; false when it was already running. */
  async resume(sb: Sandbox, timeoutSeconds: number | undefined): Promise<boolean> {
    if (sb.state === "running") return false;
    if (sb.state === "paused") await sb.workspace.resume();
    else await sb.workspace.start();
    sb.state = "running";
    this.setTimeout(sb, timeoutSeconds ?? DEFAULT_TIMEOUT_S);
    this.#config.log?.(`sandbox ${sb.id}: resumed`);
    return true;
  }

  /** Kill the VM and delete the workspace; false when there was no such sandbox. */
  async kill(id: string): Promise<boolean> {
    const sb = this.#sandboxes.get(id);
    if (!sb) return false;
    this.#sandboxes.delete(id);
    if (sb.timer) clearTimeout(sb.timer);
    await sb.workspace.delete({ force: true });
    await Promise.race([sb.processes.settle(), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.#config.log?.(`sandbox ${id}: killed`);
    return true;
  }

  /** Kill every sandbox (server shutdown: E2B sandboxes do not outlive their API). */
  async killAll(): Promise<void> {
    await Promise.allSettled([...this.#creating]);
    await Promise.allSettled([...this.#sandboxes.keys()].map((id) => this.kill(id)));
  }
}
