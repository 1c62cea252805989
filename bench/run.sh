#!/usr/bin/env bash
# Builds relay and the harness, checks that the reference servers are installed, and runs
# the benchmark suite: relay vs coturn (TURN) and relay vs the PeerJS reference server
# (signaling), on 127.0.0.1 only. Arguments go to the harness, e.g.
#   bench/run.sh                                   # default suite, 3 rounds (~7-10 min)
#   bench/run.sh -quick                            # 1 round, short windows (~1.5-2 min)
#   bench/run.sh -json bench.json -plot docs/bench-throughput.png
# See bench/README.md for what each number means.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v go >/dev/null 2>&1 || missing+=("go (https://go.dev/dl)")
command -v turnserver >/dev/null 2>&1 || missing+=("turnserver: apt-get install coturn")
command -v node >/dev/null 2>&1 || missing+=("node: apt-get install nodejs")
peerjs=e2e/browser/node_modules/peer/dist/bin/peerjs.js
[ -f "$peerjs" ] || missing+=("$peerjs: (cd e2e/browser && npm ci)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'bench/run.sh: missing %s\n' "${missing[@]}" >&2
  echo "(run the harness directly with -mode turn or -servers relay,coturn to skip what you lack)" >&2
  exit 1
fi
# A coturn started by the Debian package is harmless to us (we use free ports) but it is
# CPU noise; say so rather than stop a service we did not start.
if pgrep -x turnserver >/dev/null 2>&1; then
  echo "bench/run.sh: note: a turnserver is already running on this machine (pid $(pgrep -x turnserver | tr '\n' ' '))" >&2
fi

tmp=$(mktemp -d -t relay-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "building relay (./cmd/relay) and the harness (bench/, a Go module of its own) into $tmp" >&2
go build -o "$tmp/relay" ./cmd/relay
(cd bench && go build -o "$tmp/bench" .)

export BENCH_COMMAND="bench/run.sh${*:+ $*}"
label="working tree at $(git describe --always --dirty 2>/dev/null || echo unknown)"
"$tmp/bench" -relay-bin "$tmp/relay" -relay-label "$label" -peerjs "$peerjs" "$@"
