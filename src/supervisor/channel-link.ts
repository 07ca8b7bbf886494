/**
 * Adapter from the guest channel library (src/channel GuestChannel) to the supervisor's GuestLink:
 * one place where channel types and errors meet the control protocol's.
 */
import type { Duplex } from "node:stream";
import { GuestChannel, type ConsoleHandle } from "../channel/guest-channel.ts";
import { ChannelErrors } from "../channel/errors.ts";
import { BackendErrors } from "../backend/errors.ts";
import type { GuestLink } from "./guest-link.ts";
import type { ConsoleExit, ExecRequest, ExecResult, WorkloadResult } from "./protocol.ts";
import type { ConsoleSession, OutputStream } from "./server.ts";

void ChannelErrors; // the channel's codes are registered by importing its error module

export interface ChannelLinkOptions {
  timeoutMs: number;
  /** Serial log tail, attached to channel errors when the guest dies. */
  describeDeath?: () => string | undefined;
}

function consoleSession(h: ConsoleHandle): ConsoleSession {
  const closeRequested = Promise.withResolvers<undefined>();
  // Ends when the shell exits, or as soon as the host closes it (the guest then kills the shell's
  // process group; its exit report may never come back on a stream we closed).
  const exit = Promise.race([
    h.exited.then(
      (r): ConsoleExit => ({
        status: r.status,
        ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
        ...(r.signal ? { signal: r.signal } : {}),
        ...(r.error ? { error: `${r.error.code}: ${r.error.message}` } : {}),
      }),
      () => undefined,
    ),
    closeRequested.promise,
  ]);
  const closed = exit.then(() => undefined);
  return {
    write: (data) => void h.write(data).catch(() => {}),
    resize: (cols, rows) => {
      try {
        h.resize(cols, rows);
      } catch {
        /* console already gone */
      }
    },
    close: () => {
      h.close();
      closeRequested.resolve(undefined);
    },
    onData: (cb) => void h.onData(cb),
    closed,
    exit,
  };
}

export async function connectChannelLink(stream: Duplex, opts: ChannelLinkOptions): Promise<GuestLink> {
  let ch: GuestChannel;
  try {
    ch = await GuestChannel.connect(stream, { helloTimeoutMs: opts.timeoutMs, ...(opts.describeDeath ? { describeDeath: opts.describeDeath } : {}) });
  } catch (e) {
    if (ChannelErrors.CHANNEL_TIMEOUT.is(e)) {
      throw BackendErrors.BOOT_TIMEOUT({ message: `the guest did not say hello within ${opts.timeoutMs} ms`, cause: e });
    }
    throw e;
  }
  let wantOutput = false;
  const outputListeners: ((s: OutputStream, d: Buffer) => unknown)[] = [];
  ch.onWorkloadOutput((chunk) => {
    const waits = outputListeners.map((l) => l(chunk.stream, chunk.data)).filter((p) => p instanceof Promise);
    return waits.length > 0 ? Promise.all(waits) : undefined;
  });
  const hello = ch.hello;
  return {
    hello: { protocolVersion: hello.protocol, initVersion: hello.initVersion, capabilities: hello.capabilities, state: hello.state },
    async resume(msg, timeoutMs) {
      const r = await ch.resume(msg, { timeoutMs });
      return { entropyBytes: r.entropyBytes, clockStepMs: r.clockStepMs, hostnameSet: r.hostnameSet, networkSet: r.networkSet, ...(r.error ? { error: r.error } : {}) };
    },
    ...(hello.capabilities.includes("refresh")
      ? {
          async wipeSecrets(timeoutMs: number) {
            const r = await ch.wipeSecrets({ timeoutMs });
            return { count: r.count, ...(r.error ? { error: r.error } : {}) };
          },
          async refresh(msg: { secrets?: Array<{ name: string; contentBase64: string }>; trust?: Array<{ path: string; contentBase64: string }> }, timeoutMs: number) {
            const r = await ch.refresh(msg, { timeoutMs });
            return { secrets: r.secrets, trustFiles: r.trustFiles, ...(r.error ? { error: r.error } : {}) };
          },
        }
      : {}),
    async sendBootConfig(config: unknown) {
      const cfg = { ...(config as Record<string, unknown>) };
      wantOutput = Array.isArray(cfg.argv) && cfg.argv.length > 0;
      // The host relays the workload's output to `attach` (run); it also always reaches serial.log.
      if (wantOutput) cfg.streamOutput = true;
      await ch.sendBootConfig(cfg, { timeoutMs: opts.timeoutMs });
    },
    ping: (timeoutMs) => ch.ping(timeoutMs),
    async exec(req: ExecRequest, onOutput, signal, io): Promise<ExecResult> {
      const h = ch.exec({
        argv: req.argv,
        ...(req.env ? { env: req.env } : {}),
        ...(req.cwd ? { cwd: req.cwd } : {}),
        ...(req.user ? { user: req.user } : {}),
        ...(io?.stdin ? { stdin: true } : req.stdin !== undefined ? { stdin: Buffer.from(req.stdin, "base64") } : {}),
        ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
        ...(req.stdoutLimitBytes ? { stdoutLimitBytes: req.stdoutLimitBytes } : {}),
        ...(req.stderrLimitBytes ? { stderrLimitBytes: req.stderrLimitBytes } : {}),
      });
      const onAbort = () => {
        try {
          h.kill("SIGKILL");
        } catch {
          /* already ended */
        }
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      io?.onSignal((sig) => {
        try {
          h.kill(sig);
        } catch {
          /* already ended */
        }
      });
      if (io?.stdin) {
        const source = io.stdin;
        // Each chunk waits for the guest's stdin credit; EOF closes the command's stdin.
        void (async () => {
          for await (const chunk of source) await h.writeStdin(chunk);
          h.closeStdin();
        })().catch(() => {}); // the stream ended first: the result says why
      }
      try {
        if (onOutput) for await (const chunk of h) await onOutput(chunk.stream, chunk.data);
        await h;
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
      const r = await h;
      return {
        status: r.status,
        ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
        ...(r.signal ? { signal: r.signal } : {}),
        ...(r.error ? { error: `${r.error.code}: ${r.error.message}` } : {}),
        stdout: r.stdout.toString("base64"),
        stderr: r.stderr.toString("base64"),
        stdoutTruncated: r.stdoutTruncated,
        stderrTruncated: r.stderrTruncated,
        startedAt: r.startedAt,
        completedAt: r.exitedAt,
      };
    },
    async openConsole(opts) {
      return consoleSession(ch.openConsole(opts));
    },
    onWorkloadOutput(cb) {
      outputListeners.push(cb);
    },
    async workloadResult(): Promise<WorkloadResult> {
      const r = await ch.result();
      return {
        ran: true,
        ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
        ...(r.signal ? { signal: r.signal } : {}),
        ...(r.startError ? { startError: `${r.startError.code}: ${r.startError.message}` } : {}),
        ...(r.startedAt ? { startedAt: r.startedAt } : {}),
        ...(r.exitedAt ? { exitedAt: r.exitedAt } : {}),
      };
    },
    shutdown: (timeoutMs) => ch.shutdown({ timeoutMs }),
    close: () => ch.close(),
    closed: ch.closed.then((e) => e),
  };
}
