// The client library's static checks (make test-client runs them):
//  1. tsc type-checks orchestrator.js (JSDoc, strict) and regenerates
//     orchestrator.d.ts; a committed .d.ts that differs is stale: fail.
//  2. tsc --noEmit compiles test/types/api.ts, a TypeScript program written
//     against the public API (orchestrator.d.ts).
//  3. size budget: the browser bundle, minified (esbuild) and gzipped
//     (level 9), must stay under BUDGET bytes.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

export const BUDGET = 8 * 1024;
const dir = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(dir, "node_modules", "typescript", "bin", "tsc");
const run = (args) => execFileSync(process.execPath, [tsc, ...args], { cwd: dir, stdio: "inherit" });

const before = readFileSync(join(dir, "orchestrator.d.ts"), "utf8");
run(["-p", "tsconfig.json"]);
const after = readFileSync(join(dir, "orchestrator.d.ts"), "utf8");
if (before !== after) {
  console.error("web/client/orchestrator.d.ts was stale: regenerated it (npm run types); commit it");
  process.exit(1);
}
try {
  execFileSync("git", ["diff", "--exit-code", "--quiet", "--", "orchestrator.d.ts"], { cwd: dir });
} catch {
  console.error("web/client/orchestrator.d.ts differs from the committed one: commit it");
  process.exit(1);
}
run(["--noEmit", "-p", "test/types/tsconfig.json"]);

const out = await esbuild.build({ entryPoints: [join(dir, "orchestrator.js")], bundle: true, minify: true, format: "esm", write: false, target: "es2020" });
const min = out.outputFiles[0].contents;
const gz = gzipSync(min, { level: 9 }).length;
console.log(`orchestrator.js: ${readFileSync(join(dir, "orchestrator.js")).length} B source, ${min.length} B minified, ${gz} B minified+gzipped (budget ${BUDGET} B)`);
if (gz > BUDGET) {
  console.error(`size budget exceeded: ${gz} B > ${BUDGET} B`);
  process.exit(1);
}
