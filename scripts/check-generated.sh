#!/usr/bin/env bash
# Fails when gen/ differs from what `buf generate` makes of proto/ (stale or hand-edited code).
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf generate
if [ -n "$(git status --porcelain -- gen)" ]; then
  echo "gen/ is stale: run 'npm run generate' and commit the result." >&2
  git status --short -- gen >&2
  git diff --stat -- gen >&2
  exit 1
fi
echo "gen/ is up to date"
