/** Durations users type: `30` (seconds), `500ms`, `30s`, `5m`, `1h`. */
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
