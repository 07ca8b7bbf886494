/**
 * The exported surface of `microagent` (src/index.ts) and `microagent/internals`, checked against
 * lists in this directory. A change to either list is a visible decision in review: update the
 * file with `MICROAGENT_UPDATE_SURFACE=1 node --test test/unit/public-surface.test.ts`.
 *
 * Names and kinds come from the TypeScript checker, so types count as much as values.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import ts from "typescript";

const root = new URL("../../", import.meta.url).pathname;

function kindOf(checker: ts.TypeChecker, sym: ts.Symbol): string {
  const s = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
  const f = s.flags;
  if (f & ts.SymbolFlags.Class) return "class";
  if (f & ts.SymbolFlags.Function) return "function";
  if (f & ts.SymbolFlags.Variable) return "const";
  if (f & ts.SymbolFlags.Interface) return "interface";
  if (f & ts.SymbolFlags.TypeAlias) return "type";
  if (f & ts.SymbolFlags.Enum) return "enum";
  return "other";
}

function surfaces(files: readonly string[]): Map<string, string[]> {
  const program = ts.createProgram(
    files.map((f) => root + f),
    { allowImportingTsExtensions: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2023, strict: true, skipLibCheck: true },
  );
  const checker = program.getTypeChecker();
  const out = new Map<string, string[]>();
  for (const f of files) {
    const sf = program.getSourceFile(root + f);
    assert.ok(sf, f);
    const mod = checker.getSymbolAtLocation(sf);
    assert.ok(mod, `${f} is a module`);
    out.set(f, checker.getExportsOfModule(mod).map((s) => `${s.name} ${kindOf(checker, s)}`).sort());
  }
  return out;
}

const LISTS: Record<string, string> = { "src/index.ts": "test/unit/public-surface.txt", "src/internals.ts": "test/unit/internals-surface.txt" };
const found = surfaces(Object.keys(LISTS));
const indexModule = await import("../../src/index.ts");

for (const [src, list] of Object.entries(LISTS)) {
  test(`public-surface: ${src} exports exactly what ${list} lists`, () => {
    const actual = found.get(src) as string[];
    if (process.env.MICROAGENT_UPDATE_SURFACE === "1") writeFileSync(root + list, `${actual.join("\n")}\n`);
    const expected = readFileSync(root + list, "utf8").trim().split("\n");
    const added = actual.filter((l) => !expected.includes(l));
    const removed = expected.filter((l) => !actual.includes(l));
    assert.deepEqual({ added, removed }, { added: [], removed: [] }, `${src} changed its exports; if intended, update ${list}`);
  });
}

test("public-surface: the public entry stays small and exports no internals", () => {
  const names = (found.get("src/index.ts") as string[]).map((l) => l.split(" ")[0]);
  assert.ok(names.length < 120, `src/index.ts exports ${names.length} names`);
  for (const internal of ["transition", "appendEvent", "acquireLock", "FrameDecoder", "launchQemu", "QmpClient", "stopProcessGroup", "UnixSocketTransport", "SupervisorClient", "createWorkspace"]) {
    assert.ok(!names.includes(internal), `${internal} is internal`);
  }
  for (const n of Object.keys(indexModule)) assert.ok(names.includes(n), `${n} is exported at runtime but not listed`);
});

test("public-surface: package.json exposes exactly . and ./internals", () => {
  const pkg = JSON.parse(readFileSync(root + "package.json", "utf8")) as { exports: Record<string, { default: string; types: string }> };
  assert.deepEqual(Object.keys(pkg.exports).sort(), [".", "./internals"]);
  assert.equal(pkg.exports["./internals"]?.default, "./dist/internals.js");
  assert.equal(pkg.exports["./internals"]?.types, "./dist/internals.d.ts");
});
