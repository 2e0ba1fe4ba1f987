/**
 * Keeps docs/CONTRACT.md and its citations honest. Reads the rules the page defines (`- **W1 — …`),
 * finds every rule id cited anywhere in the repository (code, tests, docs, interop clients), and:
 * fails when an id is cited that the page does not define, fails when a rule in force has no test
 * citing it, and writes (or with --check, compares) the page's generated "Where each rule is
 * tested" section. Run by `npm run contract-doc`; `npm run verify` runs it with --check.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const PAGE = "docs/CONTRACT.md";
const BEGIN = "<!-- contract-tests:begin -->";
const END = "<!-- contract-tests:end -->";
/** A rule id: a letter of a rule family and a number from 1 (so `C0` of "C0 controls" is not one). */
const CITATION = /\b([WRCATE])([1-9][0-9]?)\b/g;
const SCANNED = /\.(ts|js|mjs|md|go|py|sh|proto|ya?ml)$/;
const SKIPPED = [/^gen\//, /^test\/interop\/(go|python)\/gen\//, /^node_modules\//, /^docs\/CONTRACT\.md$/, /^bench\/results\//];

interface Rule {
  readonly id: string;
  readonly title: string;
  readonly planned: boolean;
}

/** The rules defined on the page, in page order. */
export function definedRules(page: string): Rule[] {
  const rules: Rule[] = [];
  for (const line of page.split("\n")) {
    const m = /^- \*\*([WRCATE][1-9][0-9]?) — (.+?)\*\*(.*)$/.exec(line);
    if (m !== null) rules.push({ id: m[1]!, title: m[2]!.replace(/\.$/, ""), planned: m[3]!.includes("(planned") });
  }
  return rules;
}

/** Every cited id with the places it is cited, by file. */
function citations(files: readonly string[]): Map<string, Map<string, number[]>> {
  const out = new Map<string, Map<string, number[]>>();
  for (const file of files) {
    const lines = readFileSync(file, "utf8").split("\n");
    lines.forEach((line, i) => {
      for (const m of line.matchAll(CITATION)) {
        const id = `${m[1]}${m[2]}`;
        let byFile = out.get(id);
        if (byFile === undefined) out.set(id, (byFile = new Map()));
        const at = byFile.get(file) ?? [];
        at.push(i + 1);
        byFile.set(file, at);
      }
    });
  }
  return out;
}

function repositoryFiles(): string[] {
  const listed = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard"], { encoding: "utf8" });
  return listed
    .split("\n")
    .filter((f) => f !== "" && SCANNED.test(f) && !SKIPPED.some((s) => s.test(f)))
    .filter((f) => {
      try {
        readFileSync(f);
        return true;
      } catch {
        return false; // deleted in the working tree
      }
    })
    .sort();
}

/** Test files citing `id` (helpers do not count: a citation there tests nothing by itself). */
function testsCiting(cited: Map<string, Map<string, number[]>>, id: string): string[] {
  return [...(cited.get(id)?.keys() ?? [])].filter((f) => f.startsWith("test/") && !f.startsWith("test/helpers/"));
}

/** The generated section: each rule with the test files that cite it. */
function section(rules: readonly Rule[], cited: Map<string, Map<string, number[]>>): string {
  const rows = rules.map((rule) => {
    const tests = testsCiting(cited, rule.id);
    const where = rule.planned ? "*planned*" : tests.map((f) => `\`${f}\``).join(", ");
    return `| ${rule.id} | ${rule.title} | ${where} |`;
  });
  return [BEGIN, "| rule | | tests that cite it |", "| --- | --- | --- |", ...rows, END].join("\n");
}

function main(): void {
  const check = process.argv.includes("--check");
  const page = readFileSync(PAGE, "utf8");
  const rules = definedRules(page);
  const defined = new Set(rules.map((r) => r.id));
  const cited = citations(repositoryFiles());
  const problems: string[] = [];
  for (const [id, byFile] of cited) {
    if (defined.has(id)) continue;
    const places = [...byFile].map(([f, lines]) => `${f}:${lines.join(",")}`).join(" ");
    problems.push(`${id} is cited but ${PAGE} does not define it: ${places}`);
  }
  for (const rule of rules) {
    if (rule.planned) continue;
    const tests = testsCiting(cited, rule.id);
    if (tests.length === 0) problems.push(`${rule.id} (${rule.title}) is in force but no test cites it`);
  }
  const begin = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  if (begin < 0 || end < begin) problems.push(`${PAGE} lacks the ${BEGIN} … ${END} markers`);
  if (problems.length > 0) {
    for (const p of problems) console.error(`contract-doc: ${p}`);
    process.exit(1);
  }
  const next = `${page.slice(0, begin)}${section(rules, cited)}${page.slice(end + END.length)}`;
  if (check) {
    if (next !== page) {
      console.error(`contract-doc: ${PAGE} is not current: run 'npm run contract-doc' and commit the result.`);
      process.exit(1);
    }
    console.log(`contract-doc: ${rules.length} rules, every citation defined, every rule in force tested`);
    return;
  }
  writeFileSync(PAGE, next);
  console.log(`contract-doc: wrote ${PAGE} (${rules.length} rules)`);
}

main();
