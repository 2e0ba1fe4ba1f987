#!/usr/bin/env bash
# Prepares the interop clients of test/interop/ (see test/interop/SCENARIOS.md): the pinned Go
# protoc plugins, a Python virtualenv with pinned grpcio-tools, Go and Python stubs generated from
# proto/ (never committed), and the Go programs built. Idempotent; when warm it only regenerates
# the stubs and runs a cached `go build` (about 2 s); offline once the first run has downloaded.
#
#   bash scripts/interop.sh                       prepare; prints INTEROP_*=... lines on stdout
#   bash scripts/interop.sh run ADDRESS [SUFFIX]  prepare, then run the four clients against a server
#
# Cache: $TIDEMARK_INTEROP_CACHE (default ~/.cache/tidemark-interop): go-bin/ (plugins), venv/.
# Progress and errors go to stderr. A missing toolchain (go, python3, buf, jq) is an error.
set -Eeuo pipefail
trap 'echo "interop: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# ---------------------------------------------------------------- pinned versions
PROTOC_GEN_GO_VERSION=v1.36.12        # google.golang.org/protobuf/cmd/protoc-gen-go
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2     # google.golang.org/grpc/cmd/protoc-gen-go-grpc
# Go module versions: test/interop/go/go.mod and go.sum. Python: test/interop/python/requirements.txt.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INTEROP=$ROOT/test/interop
CACHE=${TIDEMARK_INTEROP_CACHE:-$HOME/.cache/tidemark-interop}
GO_BIN=$CACHE/go-bin
VENV=$CACHE/venv
PYTHON=${TIDEMARK_INTEROP_PYTHON:-python3}
# Never download a Go toolchain behind the user's back: go.mod's `go` line must be satisfied locally.
export GOTOOLCHAIN=local

log() { printf 'interop: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ns() { date +%s%N; }
since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.1fs", (b - a) / 1e9 }'; }

require_tools() {
  command -v go >/dev/null 2>&1 || die "go is not installed (the Go interop client needs Go $(sed -n 's/^go //p' "$INTEROP/go/go.mod") or later)"
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is not installed (the Python interop client needs Python 3.9+ with venv)"
  BUF=$ROOT/node_modules/.bin/buf
  [ -x "$BUF" ] || BUF=$(command -v buf 2>/dev/null) || die "buf is not installed: run 'npm install' (devDependency @bufbuild/buf)"
  if ! command -v jq >/dev/null 2>&1; then
    log "jq: installing from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    { $sudo apt-get install -y -q jq || { $sudo apt-get update -q && $sudo apt-get install -y -q jq; }; } >&2 ||
      die "jq is not installed and apt-get could not install it (the grpcurl client reads JSON with jq)"
  fi
}

# Serialise concurrent runs: they share the cache and write the same generated folders.
lock() {
  mkdir -p "$CACHE"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock 9
  fi
}

go_plugins() {
  local t0; t0=$(now_ns)
  if [ "$("$GO_BIN/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]; then
    log "go install protoc-gen-go@$PROTOC_GEN_GO_VERSION"
    GOBIN=$GO_BIN go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION" >&2
  fi
  if [ "$("$GO_BIN/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
    log "go install protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
    GOBIN=$GO_BIN go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION" >&2
  fi
  log "go plugins ready ($(since "$t0"))"
}

python_venv() {
  local t0 stamp; t0=$(now_ns)
  stamp="$(sha256sum "$INTEROP/python/requirements.txt" | cut -c1-64) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  if [ "$(cat "$VENV/.tidemark-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "creating $VENV (pinned grpcio-tools)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2 || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --disable-pip-version-check --no-input -q -r "$INTEROP/python/requirements.txt" >&2
    echo "$stamp" >"$VENV/.tidemark-stamp"
  fi
  log "python venv ready ($(since "$t0"))"
}

generate() {
  local t0 tmp; t0=$(now_ns)
  # Go: buf with the local, pinned plugins (buf.gen.interop.yaml).
  (cd "$ROOT" && PATH="$GO_BIN:$PATH" "$BUF" generate --template test/interop/buf.gen.interop.yaml)
  # Python: buf compiles (as for every other language), grpcio-tools' embedded protoc runs its
  # python, pyi and grpc_python generators over that image. buf's `protoc_builtin` cannot do it:
  # the gRPC Python generator exists only inside grpcio-tools, not as a protoc-gen-* executable.
  tmp=$(mktemp -d)
  (cd "$ROOT" && "$BUF" build --path proto/tidemark -o "$tmp/image.binpb")
  rm -rf "$INTEROP/python/gen"
  mkdir -p "$INTEROP/python/gen"
  local files
  mapfile -t files < <(cd "$ROOT/proto" && find tidemark -name '*.proto' | sort)
  "$VENV/bin/python" -m grpc_tools.protoc --descriptor_set_in="$tmp/image.binpb" \
    --python_out="$INTEROP/python/gen" --pyi_out="$INTEROP/python/gen" --grpc_python_out="$INTEROP/python/gen" "${files[@]}"
  rm -rf "$tmp"
  log "stubs generated ($(since "$t0"))"
}

build_go() {
  local t0; t0=$(now_ns)
  # -mod=readonly: go.mod and go.sum are the pins; a missing module is downloaded, never upgraded.
  (cd "$INTEROP/go" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -o bin/ ./cmd/...) >&2
  log "go programs built ($(since "$t0"))"
}

prepare() {
  local t0; t0=$(now_ns)
  require_tools
  lock
  go_plugins
  python_venv
  generate
  build_go
  log "ready ($(since "$t0"))"
  echo "INTEROP_GO_BIN=$INTEROP/go/bin"
  echo "INTEROP_PYTHON=$VENV/bin/python"
}

case "${1:-prepare}" in
  prepare) prepare ;;
  run)
    [ $# -ge 2 ] || die "usage: interop.sh run ADDRESS [SUFFIX]"
    address=$2
    suffix=${3:-$(date +%s)}
    prepare >/dev/null
    grpcurl=$(command -v grpcurl 2>/dev/null || echo "$(go env GOPATH | cut -d: -f1)/bin/grpcurl")
    [ -x "$grpcurl" ] || die "grpcurl is not installed: run 'npm run stack -- up'"
    "$INTEROP/go/bin/scenarios" "$address" "go-$suffix"
    "$VENV/bin/python" "$INTEROP/python/scenarios.py" "$address" "py-$suffix"
    GRPCURL=$grpcurl bash "$INTEROP/grpcurl/scenarios.sh" "$address" "sh-$suffix"
    (cd "$ROOT" && node --import tsx test/interop/ts/scenarios.ts "$address" "ts-$suffix")
    log "all four clients passed"
    ;;
  *) die "unknown command ${1}: use prepare or run" ;;
esac
