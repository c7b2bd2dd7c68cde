#!/bin/sh
# Sandbox start-up benchmark: `clawcage sandbox run -- /bin/true` against
# bubblewrap with comparable namespaces, alternating in one run.
# Usage (as root, from the repository root): bench/sandbox/run.sh [RUNS]
# CLAWCAGE_BASELINE_BIN=/path/to/older/clawcage adds a third column, run in
# the same iterations (before/after comparisons under the same load).
set -eu
cd "$(dirname "$0")/../.."
runs="${1:-200}"
if [ "$(id -u)" != 0 ]; then
	echo "run as root: the sandbox creates namespaces and cgroups" >&2
	exit 1
fi
if ! command -v bwrap >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q bubblewrap
fi
bin="$(mktemp -d)/clawcage"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/clawcage
echo "kernel $(uname -r), $(nproc) cores, bwrap $(bwrap --version | awk '{print $2}'), $runs runs each"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
CLAWCAGE_BIN="$bin" go test -run '^$' -bench . -benchtime "${runs}x" -count 1 ./bench/sandbox/
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
