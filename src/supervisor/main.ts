/**
 * The supervisor process: `node main.ts <workspace dir>`. Spawned detached by `start`/`run`, it owns
 * one VM for its whole life: serves the control socket, boots the VM, records every state change,
 * and exits after the VM is gone and the final state is recorded. Its stdout/stderr go to
 * supervisor.log. A SIGKILL of this process leaves its QEMU to die with it (parent-death signal)
 * and the next read reconciles the state.
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { getBackend } from "../backend/registry.ts";
import type { RunningVm } from "../backend/types.ts";
import { ensurePrivateDir } from "../util/fs.ts";
import { readManifest } from "../workspace/manifest.ts";
import { pathsForDir, type WorkspacePaths } from "../workspace/paths.ts";
import { processStartTime } from "../util/process.ts";
import { clearRuntime, writeRuntime, type RuntimeRecord } from "../workspace/runtime.ts";
import { writeResult } from "../workspace/result.ts";
import { readState, transition, STARTABLE_STATES } from "../workspace/state.ts";
import type { WorkspaceState } from "../workspace/events.ts";
import { chooseAccel } from "./accel.ts";
import { connectChannelLink } from "./channel-link.ts";
import type { WorkloadResult } from "./protocol.ts";
import { startControlServer } from "./server.ts";
import { SerialLog, DEFAULT_SERIAL_LOG_MAX_BYTES } from "./serial-log.ts";
import type { SupervisorService } from "./service.ts";
import { servicesFor } from "./services.ts";
import { SECRET_HANDOFF_FD, pairSecretHandoff, readSecretHandoff } from "../secrets/handoff.ts";
import type { ResolvedSecret } from "../secrets/resolve.ts";
import { SecretErrors } from "../secrets/errors.ts";
import { Supervisor, type ResolvedSupervisorConfig } from "./session.ts";
import { setWorkspaceDisk } from "../workspace/snapshots.ts";
import { commitWarmEntry } from "../workspace/warm.ts";
import { z } from "zod";
import { RestoreRequestSchema } from "./restore-request.ts";

/** What `MICROAGENT_WARM_CAPTURE_JSON` carries: where `run`'s warm capture goes. */
const WarmCaptureSchema = z.object({ stateDir: z.string(), key: z.string(), tmp: z.string(), overlayPath: z.string() });


export const DEFAULT_BOOT_TIMEOUT_MS = 90_000;
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 15_000;

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} supervisor[${process.pid}]: ${message}\n`);
}

/** result.json in WS-STATE's schema. */
function toResultRecord(r: WorkloadResult, runtimeId: string) {
  const status = r.startError ? "failed_to_start" : r.signal ? "signaled" : "exited";
  return {
    runtimeId,
    status,
    exitCode: r.exitCode ?? null,
    ...(r.signal ? { signal: r.signal } : {}),
    ...(r.startError ? { error: r.startError } : {}),
    ...(r.startedAt ? { startedAt: r.startedAt } : {}),
    completedAt: r.exitedAt ?? new Date().toISOString(),
  } as const;
}

export async function runSupervisor(workspaceDir: string, env: NodeJS.ProcessEnv = process.env): Promise<WorkspaceState> {
  const paths: WorkspacePaths = pathsForDir(workspaceDir, env);
  // The resolved secrets arrive first, on fd 3, from the process that spawned us (secrets/handoff.ts):
  // read to EOF at once so that process is not kept waiting, and held in memory only.
  // Only when the spawner says so (MICROAGENT_SECRETS_FD): otherwise fd 3 may be one of Node's own.
  const handoffFd = env.MICROAGENT_SECRETS_FD === String(SECRET_HANDOFF_FD) ? SECRET_HANDOFF_FD : undefined;
  const handoff = handoffFd !== undefined ? readSecretHandoff(handoffFd) : undefined;
  handoff?.catch(() => {});
  const manifest = await readManifest(paths);
  let secrets: ResolvedSecret[] = [];
  if ((manifest.secrets ?? []).length > 0) {
    try {
      if (!handoff) {
        throw SecretErrors.SECRET_HANDOFF_FAILED({
          message: `workspace ${paths.name} names secrets (${(manifest.secrets ?? []).map((r) => r.name).join(", ")}) but its supervisor was started without them`,
        });
      }
      secrets = pairSecretHandoff(manifest.secrets ?? [], await handoff);
    } catch (e) {
      // Fail closed: no boot without the secrets the manifest names. The message names no value.
      const identity = { runtimeId: env.MICROAGENT_RUNTIME_ID || "unknown", requestId: env.MICROAGENT_REQUEST_ID || `supervisor-${process.pid}` };
      await transition(paths, "failed", { detail: (e as Error).message, identity }).catch(() => {});
      throw e;
    }
  } else {
    // Nothing was expected: whatever came is dropped.
    void handoff?.then((entries) => entries.forEach((x) => x.value.wipe()), () => {});
  }
  const bootConfig: unknown = JSON.parse(await readFile(paths.bootConfig, "utf8"));
  await ensurePrivateDir(paths.runtimeDir);
  const runtimeId = env.MICROAGENT_RUNTIME_ID || randomUUID();
  const backend = getBackend(manifest.backend);
  const { accel, reason } = await chooseAccel(env, dirname(paths.runtimeDir));
  const identity = { runtimeId, requestId: env.MICROAGENT_REQUEST_ID || `supervisor-${process.pid}` };

  const warm = env.MICROAGENT_WARM_CAPTURE_JSON ? WarmCaptureSchema.parse(JSON.parse(env.MICROAGENT_WARM_CAPTURE_JSON)) : undefined;
  let warmFiled: Promise<void> = Promise.resolve();
  const config: ResolvedSupervisorConfig = {
    workspace: paths.name,
    runtimeId,
    launch: {
      workspace: paths.name,
      kernelPath: manifest.artifacts.kernel.path,
      initramfsPath: manifest.artifacts.initramfs.path,
      disk: { path: manifest.artifacts.disk.path, format: manifest.artifacts.disk.format },
      memoryMib: manifest.resources.memoryMib,
      cpus: manifest.resources.cpus,
      accel,
      serialLogPath: paths.serialLog,
      channelSocketPath: paths.channelSocket,
      controlSocketPath: paths.qmpSocket,
    },
    bootConfig,
    bootTimeoutMs: Number(env.MICROAGENT_BOOT_TIMEOUT_MS) || DEFAULT_BOOT_TIMEOUT_MS,
    shutdownTimeoutMs: DEFAULT_SHUTDOWN_TIMEOUT_MS,
    lingerMs: 3_000,
    // `start --from-snapshot` / a fork: load this snapshot instead of booting (set by the API under the lock).
    ...(env.MICROAGENT_RESTORE_JSON ? { restore: RestoreRequestSchema.parse(JSON.parse(env.MICROAGENT_RESTORE_JSON)) } : {}),
    // `run`'s warm snapshot: capture after the hello into the cache's temp directory.
    ...(warm ? { warmCapture: { stateFile: join(warm.tmp, "state"), overlayPath: warm.overlayPath } } : {}),
    shell: manifest.boot.shell[0] ?? "/bin/sh",
    // A VM paused on a full host disk is resumed once this much is free (tests use small values).
    ioPause: {
      ...(Number(env.MICROAGENT_DISK_RESUME_FREE_BYTES) > 0 ? { resumeFreeBytes: Number(env.MICROAGENT_DISK_RESUME_FREE_BYTES) } : {}),
      ...(Number(env.MICROAGENT_DISK_FULL_POLL_MS) > 0 ? { pollMs: Number(env.MICROAGENT_DISK_FULL_POLL_MS) } : {}),
    },
  };

  const runtime: RuntimeRecord = {
    runtimeId,
    supervisorPid: process.pid,
    ...(processStartTime(process.pid) !== undefined ? { supervisorStartTime: processStartTime(process.pid) } : {}),
    backend: backend.name,
    accel,
    accelReason: reason,
    sockets: { control: paths.controlSocket, channel: paths.channelSocket, qmp: paths.qmpSocket },
    startedAt: new Date().toISOString(),
  };

  // serial.log for this boot: capped (MICROAGENT_SERIAL_LOG_MAX_BYTES, default 8 MiB) with one rotated
  // predecessor, written from the VMM's console pipe; its in-memory tail feeds every death message.
  const serialLog = await SerialLog.create(paths.serialLog, {
    maxBytes: Number(env.MICROAGENT_SERIAL_LOG_MAX_BYTES) || DEFAULT_SERIAL_LOG_MAX_BYTES,
    onError: (e) => log(`writing serial.log failed (console output is dropped until it works again): ${e.message}`),
  });

  // Settles once the console pipe has delivered its last byte (QEMU's exit can be seen a moment earlier).
  let serialDrained: Promise<void> | undefined;
  const serialTail = async (): Promise<string> => {
    if (serialDrained && supervisor.vm?.exitStatus()) await Promise.race([serialDrained, new Promise((r) => setTimeout(r, 250))]);
    return cutToLine(serialLog.tail().slice(-2048)).split("\n").slice(-20).join("\n");
  };

  // Per-VM services (network, egress, ...), in hook order: services.ts is where they are registered.
  const services: SupervisorService[] = await servicesFor(manifest, paths, env, secrets);

  const pause = backend.pause;
  const supervisor = new Supervisor(config, {
    backend,
    connectLink: (stream, timeoutMs) => connectChannelLink(stream, { timeoutMs }),
    record: async (to, detail) => {
      await transition(paths, to, { detail, identity });
    },
    vmLaunched: async (vm) => {
      const out = vm.serialOutput;
      if (out) {
        out.on("data", (chunk: Buffer) => serialLog.write(chunk));
        serialDrained = new Promise((r) => out.once("close", () => r()));
      }
      const start = processStartTime(vm.pid);
      await writeRuntime(paths, { ...runtime, vmmPid: vm.pid, ...(start !== undefined ? { vmmStartTime: start } : {}), bootId: supervisor.bootId });
    },
    writeResult: (r) => writeResult(paths, toResultRecord(r, runtimeId)),
    // Filed in the background (hashing ~100 MiB) while the guest takes its boot config; awaited before exit.
    warmCaptured: (r) => {
      if (!warm) return;
      warmFiled = commitWarmEntry(warm.stateDir, warm.tmp, {
        key: warm.key,
        imageDigest: manifest.image.digest,
        ...(r.mac ? { mac: r.mac } : {}),
        frozenLayer: r.frozen.path,
        format: r.frozen.format,
        virtualSizeBytes: r.frozen.virtualSizeBytes,
      }).catch((e: unknown) => log(`filing the warm snapshot failed: ${(e as Error).message}`));
    },
    // A snapshot moved the VM onto a new top layer: the next boot must use it.
    diskSwitched: (disk) => setWorkspaceDisk(paths, disk),
    serialTail,
    // Quarantine freezes the VM when the backend can pause it; without `pause` it stays running, cut off.
    ...(pause ? { freeze: (vm: RunningVm): Promise<void> => pause.pause(vm, supervisor.launch) } : {}),
    // `pause`/`resume` thaw with the same capability; without it both are refused (PAUSE_UNSUPPORTED).
    ...(pause ? { thaw: (vm: RunningVm): Promise<void> => pause.resume(vm, supervisor.launch) } : {}),
    services,
    log,
  });

  // The control socket first, so `start` can wait on it while the VM boots.
  const stallMs = Number(env.MICROAGENT_CLIENT_STALL_MS) || undefined;
  const server = await startControlServer(paths.controlSocket, supervisor, stallMs ? { stallMs } : {});
  await writeRuntime(paths, runtime);
  const current = await readState(paths);
  if (current && STARTABLE_STATES.has(current.state)) {
    await transition(paths, "starting", { detail: `supervisor started (accel ${accel})`, identity });
  }
  log(`booting ${paths.name} with ${accel} (supervisor ready ${performance.now().toFixed(0)} ms after process start): ${reason}`);

  const onSignal = (sig: NodeJS.Signals) => {
    log(`received ${sig}: killing the VM`);
    void supervisor.kill();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("SIGHUP", () => {});

  await supervisor.boot();
  const final = await supervisor.done;
  log(`final state ${final}`);
  await serialLog.close();
  // No VM any more: drop the runtime record at once (delete and start look at it); a late `attach`
  // finds the control socket by its fixed path.
  await clearRuntime(paths);
  // The warm snapshot's filing needs no VM (its layer is hard-linked into the cache first thing).
  await warmFiled;
  // A workload's output waits a little for a late `attach` (run's client may connect after a fast exit).
  const lingerUntil = Date.now() + (supervisor.workload?.ran && !supervisor.attachedOnce ? config.lingerMs : 0);
  while (Date.now() < lingerUntil || server.connections() > 0) {
    if (supervisor.attachedOnce && server.connections() === 0) break;
    if (Date.now() > lingerUntil + 30_000) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await server.close();
  return final;
}

/** Drop a partial first line (the cut of a tail). */
function cutToLine(text: string): string {
  const nl = text.indexOf("\n");
  return nl >= 0 && nl < text.length - 1 ? text.slice(nl + 1) : text;
}

const entry = process.argv[1] ?? "";
if (entry.endsWith("/supervisor/main.ts") || entry.endsWith("/supervisor/main.js")) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write("usage: supervisor <workspace dir>\n");
    process.exit(2);
  }
  // stdout/stderr are supervisor.log: on a full disk a log write fails, and an unhandled stream error
  // would kill the supervisor (and its VM) exactly when it has to report DISK_FULL. Lose the line instead.
  process.stdout.on("error", () => {});
  process.stderr.on("error", () => {});
  runSupervisor(dir).then(
    () => process.exit(0),
    (e: unknown) => {
      log(`fatal: ${(e as Error)?.stack ?? String(e)}`);
      process.exit(1);
    },
  );
}
