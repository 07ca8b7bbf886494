/**
 * The library needs Node 22.18+ (zstd in zlib, type stripping for the supervisor's sources in
 * development). Importing it on an older Node fails here, with a sentence, instead of later with a
 * link error naming some missing export. `src/index.ts` imports this module first.
 */
export const MIN_NODE: readonly [number, number] = [22, 18];

export function nodeIsSupported(version: string = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  return major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
}

if (!nodeIsSupported()) {
  throw new Error(
    `microagent needs Node ${MIN_NODE.join(".")} or newer; this is Node ${process.versions.node}. ` +
      "Install Node 22.18+ (the repository's scripts/setup puts Node 24 in .tools/).",
  );
}
