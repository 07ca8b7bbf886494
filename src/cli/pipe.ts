/**
 * Host output streams that a reader may close early (`microagent exec W -- yes | head`): a write
 * then fails with EPIPE, which Node reports as an 'error' event that would otherwise crash the CLI
 * with a stack trace. Commands that stream watch for it, stop their work and exit quietly with
 * EXIT_BROKEN_PIPE, the code a shell reports for a process killed by SIGPIPE.
 */
export const EXIT_BROKEN_PIPE = 141;

export interface PipeWatch {
  readonly broken: boolean;
  /** Write, and when the stream is full, resolve once it drained (or broke). */
  write(stream: NodeJS.WritableStream, data: Uint8Array): Promise<void> | undefined;
}

/** Any write error on these streams counts as a closed reader: `onBroken` runs once. */
export function watchBrokenPipe(streams: readonly NodeJS.WritableStream[], onBroken: () => void): PipeWatch {
  let broken = false;
  const waiters = new Set<() => void>();
  const breakNow = () => {
    if (broken) return;
    broken = true;
    for (const w of [...waiters]) w();
    onBroken();
  };
  // Left attached for the process's life: later writes (the queued rest) fail the same way.
  for (const s of new Set(streams)) s.on("error", breakNow);
  return {
    get broken() {
      return broken;
    },
    write(stream, data) {
      if (broken) return undefined;
      if (stream.write(data)) return undefined;
      return new Promise<void>((resolve) => {
        const done = () => {
          stream.off("drain", done);
          waiters.delete(done);
          resolve();
        };
        waiters.add(done);
        stream.on("drain", done);
      });
    },
  };
}
