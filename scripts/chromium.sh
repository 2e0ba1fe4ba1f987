#!/usr/bin/env bash
# Makes sure Debian's chromium is installed, for the browser tests (test/browser/, driven by
# playwright-core). Idempotent: prints the browser's path and exits at once when it is there.
# Needs root (or sudo) and Debian's package mirror the first time.
set -euo pipefail

if path="$(command -v chromium)"; then
  echo "$path"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing Debian's chromium (once) ..." >&2
export DEBIAN_FRONTEND=noninteractive
# The lock is shared with other apt runs on the machine: wait for it rather than fail.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >&2
command -v chromium
