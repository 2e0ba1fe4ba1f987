#!/usr/bin/env bash
# Fails when proto/ (as it is in the working tree) breaks compatibility with the contracts of
# earlier commits: `buf breaking` with the FILE rules of buf.yaml. See docs/COMPATIBILITY.md.
#
# Baselines (nothing is ever fetched; each is exported with `git archive`, so a shallow clone
# works as far as its history reaches):
#   - default: HEAD~1, the previous commit of main, and every other first-parent commit among
#     HEAD and the last $TIDEMARK_BREAKING_DEPTH (default 50) commits whose proto/ differs — v1
#     promises compatibility with every earlier v1, so a break in the first commit of a
#     multi-commit push is caught too — plus HEAD itself, for uncommitted changes;
#   - TIDEMARK_BREAKING_AGAINST=<ref> (e.g. origin/main, v1.4.0): exactly that commit; it must exist.
# When HEAD has no reachable parent (a single commit, or a shallow clone of depth 1) only HEAD can
# be compared, which checks uncommitted changes only: the script says so. When no comparison is
# possible at all (no git, no commit, no buf.yaml and proto/ at any baseline) it prints NOT CHECKED
# and exits 0, or 1 with TIDEMARK_BREAKING_REQUIRED=1. It always names what it compared with.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'check-breaking: %s\n' "$*" >&2; }
not_checked() {
  log "NOT CHECKED: $*"
  if [ "${TIDEMARK_BREAKING_REQUIRED:-0}" = "1" ]; then
    log "TIDEMARK_BREAKING_REQUIRED=1: failing"
    exit 1
  fi
  exit 0
}

BUF=${BUF:-$ROOT/node_modules/.bin/buf}
[ -x "$BUF" ] || BUF=$(command -v buf 2>/dev/null) || { log "buf is not installed: run 'npm install'"; exit 1; }
DEPTH=${TIDEMARK_BREAKING_DEPTH:-50}
[[ $DEPTH =~ ^[0-9]+$ ]] || { log "TIDEMARK_BREAKING_DEPTH must be a number, got '$DEPTH'"; exit 1; }

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || not_checked "$ROOT is not a git work tree, so there is no baseline"
git rev-parse --verify --quiet HEAD >/dev/null || not_checked "the repository has no commit yet"

# A ref is usable when its commit and tree objects are present (a shallow clone lacks parents).
usable() { git rev-parse --verify --quiet "$1^{commit}" >/dev/null && git cat-file -e "$1^{tree}" 2>/dev/null; }
# What a baseline's contracts are: the trees of buf.yaml and proto/, empty when either is missing.
contracts() {
  local yaml proto
  yaml=$(git rev-parse --verify --quiet "$1:buf.yaml" 2>/dev/null) && proto=$(git rev-parse --verify --quiet "$1:proto" 2>/dev/null) && echo "$yaml $proto"
  return 0
}

declare -a REFS=()
if [ -n "${TIDEMARK_BREAKING_AGAINST:-}" ]; then
  usable "$TIDEMARK_BREAKING_AGAINST" || { log "TIDEMARK_BREAKING_AGAINST=$TIDEMARK_BREAKING_AGAINST is not a commit in this clone (nothing is fetched)"; exit 1; }
  REFS=("$TIDEMARK_BREAKING_AGAINST")
  SCOPE="TIDEMARK_BREAKING_AGAINST"
else
  declare -A seen=()
  for ((i = 0; i <= DEPTH; i++)); do
    ref=HEAD~$i
    [ "$i" -gt 0 ] || ref=HEAD
    usable "$ref" || break
    key=$(contracts "$ref")
    [ -n "$key" ] || continue
    # HEAD~1 always counts, as the previous commit; others only when their contracts differ.
    if [ -z "${seen[$key]:-}" ] || [ "$ref" = "HEAD~1" ]; then
      seen[$key]=1
      REFS+=("$ref")
    fi
  done
  if usable HEAD~1; then
    SCOPE="the previous commit and earlier distinct contracts within $DEPTH commits"
  elif [ "$(git rev-parse --is-shallow-repository)" = "true" ]; then
    SCOPE="HEAD only: a shallow clone without the previous commit (fetched nothing; 'git fetch --deepen=$DEPTH' or TIDEMARK_BREAKING_AGAINST=<ref> checks committed changes), so only uncommitted changes are checked"
  else
    SCOPE="HEAD only: the repository has a single commit, so only uncommitted changes are checked"
  fi
fi
[ "${#REFS[@]}" -gt 0 ] || not_checked "no baseline has buf.yaml and proto/: nothing to be compatible with"

BASELINE=$(mktemp -d)
trap 'rm -rf "$BASELINE"' EXIT
names=()
for ref in "${REFS[@]}"; do names+=("$ref ($(git rev-parse --short "$ref"))"); done
log "comparing proto/ with ${names[*]}: $SCOPE"
failed=()
for ref in "${REFS[@]}"; do
  rm -rf "$BASELINE/against"
  mkdir -p "$BASELINE/against"
  git archive "$ref" buf.yaml proto | tar -x -C "$BASELINE/against"
  if ! "$BUF" breaking --against "$BASELINE/against" >&2; then
    failed+=("$ref")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  log "breaking changes against ${failed[*]}: v1 takes additive changes only; the rest needs tidemark.v2 (docs/COMPATIBILITY.md)"
  exit 1
fi
log "no breaking change"
