#!/bin/sh
# Privacy router benchmark: direct vs clawcage vs a bare Go ReverseProxy
# (the floor) vs a minimal Go HTTP/1.1 proxy (the lean floor) vs nginx (a
# minimal C reverse proxy), side by side in one run. Run as root from anywhere: bench/router/run.sh [router-bench flags...]
# nginx is installed with apt-get (nginx-light) if missing.
# ROUTER_BENCH_BASELINE=<git revision> also builds clawcage at that revision
# (from `git archive`, outside the checkout) and runs it side by side as
# baseline: compare a change against its parent in one invocation.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${ROUTER_BENCH_DIR:-/tmp/clawcage-router-bench}
mkdir -p "$work"
(cd "$repo" && go build -o "$work/clawcage" ./cmd/clawcage && go build -o "$work/router-bench" ./bench/router)
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1 ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx-light >/dev/null; }
	# The package starts a system nginx; the bench runs its own.
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi
ngx=$(command -v nginx || echo /usr/sbin/nginx)
base=""
if [ -n "${ROUTER_BENCH_BASELINE:-}" ]; then
	rm -rf "$work/base-src" && mkdir -p "$work/base-src"
	(cd "$repo" && git archive "$ROUTER_BENCH_BASELINE") | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -o "$work/clawcage-base" ./cmd/clawcage)
	base="-baseline $work/clawcage-base"
	echo "baseline: clawcage at $(cd "$repo" && git rev-parse --short "$ROUTER_BENCH_BASELINE")"
fi
echo "go: $(go version); nginx: $($ngx -v 2>&1 | head -1); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086 # $base is empty or two words
exec "$work/router-bench" -clawcage "$work/clawcage" $base -lean-floor -nginx "$ngx" "$@"
