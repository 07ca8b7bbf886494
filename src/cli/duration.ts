/**
 * Durations users type: `30` (seconds), `500ms`, `30s`, `5m`, `1h`. A bare number means seconds,
 * which is why this is not the `ms` package (where `"30"` is 30 ms). Flags reach it through
 * commander argParsers (`parseDurationFlag` in commands/workspace-flags.ts), so a bad value is a
 * usage error (exit 2) before the command does anything.
 */
import { CommonErrors } from "../contract/errors.ts";

export function parseDurationMs(input: string, what = "duration"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input);
  if (!m) {
    throw CommonErrors.INVALID_ARGUMENT({
      message: `invalid ${what} '${input}': expected a number of seconds or a value like 500ms, 30s, 5m, 1h`,
    });
  }
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  const factor = unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : 3_600_000;
  return Math.round(n * factor);
}
