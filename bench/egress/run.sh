#!/bin/sh
# Egress proxy benchmark: direct vs clawcage vs a bare Go relay vs
# tinyproxy vs smokescreen, side by side in one run. Run as root from
# anywhere: bench/egress/run.sh [egress-bench flags...]
# tinyproxy is installed with apt-get if missing; smokescreen is built from
# its Go module in a temporary GOPATH outside the repository (never in it).
# EGRESS_BENCH_BASELINE=<git revision> also builds clawcage at that revision
# (from `git archive`, outside the checkout) and runs it side by side as
# clawcage-base: compare a change against its parent in one invocation.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${EGRESS_BENCH_DIR:-/tmp/clawcage-egress-bench}
mkdir -p "$work"
(cd "$repo" && go build -o "$work/clawcage" ./cmd/clawcage && go build -o "$work/egress-bench" ./bench/egress)
if ! command -v tinyproxy >/dev/null 2>&1; then
	apt-get install -y tinyproxy >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y tinyproxy >/dev/null; }
fi
tiny=$(command -v tinyproxy || true)
base=""
if [ -n "${EGRESS_BENCH_BASELINE:-}" ]; then
	rm -rf "$work/base-src" && mkdir -p "$work/base-src"
	(cd "$repo" && git archive "$EGRESS_BENCH_BASELINE") | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -o "$work/clawcage-base" ./cmd/clawcage)
	base="-baseline $work/clawcage-base"
	echo "baseline: clawcage at $(cd "$repo" && git rev-parse --short "$EGRESS_BENCH_BASELINE")"
fi
if [ ! -x "$work/gopath/bin/smokescreen" ]; then
	(cd "$work" && GOPATH="$work/gopath" GOFLAGS=-mod=mod go install github.com/stripe/smokescreen@v0.1.0)
fi
echo "go: $(go version); tinyproxy: $($tiny -v 2>&1 | head -1); smokescreen: v0.1.0; cpus: $(nproc)"
# shellcheck disable=SC2086 # $base is empty or two words
exec "$work/egress-bench" -clawcage "$work/clawcage" $base -smokescreen "$work/gopath/bin/smokescreen" -tinyproxy "$tiny" "$@"
