/**
 * Glue between commander and the output layer: every command's action is wrapped by `action()`,
 * which hands it the CLI context (global flags, streams) and renders its outcome. Errors propagate
 * to main, which renders them once.
 */
import type { CliContext, CommandOutcome } from "./output.ts";
import { emitOutcome } from "./output.ts";

let current: CliContext | undefined;

/** @internal set by main before parsing */
export function setCliContext(ctx: CliContext): void {
  current = ctx;
}

export function cliContext(): CliContext {
  if (!current) throw new Error("internal: CLI context used before main set it");
  return current;
}

export function action<Args extends unknown[]>(
  fn: (ctx: CliContext, ...args: Args) => Promise<CommandOutcome>,
): (...args: Args) => Promise<void> {
  return async (...args: Args) => {
    const ctx = cliContext();
    const outcome = await fn(ctx, ...args);
    process.exitCode = emitOutcome(outcome, ctx.globals, ctx.streams);
  };
}
