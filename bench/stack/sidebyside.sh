#!/bin/bash
# Side-by-side stack benchmark of several clawcage binaries in one
# invocation (alternating, so machine load hits them alike): `up` to ready,
# `sandbox create` to the command running (seen by polling, and the file's
# mtime, which has no polling lag) and to the CLI's return, and the
# router's and policy engine's CPU per create + delete.
# Usage (root): bench/stack/sidebyside.sh ROUNDS CREATES BIN...
set -eu
if [ "$(id -u)" != 0 ] || [ $# -lt 3 ]; then
	echo "usage (as root): $0 ROUNDS CREATES BIN..." >&2
	exit 1
fi
rounds=$1 creates=$2
shift 2
work=$(mktemp -d)
chmod 0711 "$work"
i=0
for b in "$@"; do # copies the components' uids can execute
	i=$((i + 1))
	cp "$b" "$work/bin$i"
	chmod 0755 "$work/bin$i"
done
cat >"$work/clawcage.yaml" <<'YAML'
router:
  providers:
    local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
  routes:
    default: [{provider: local, model: m}]
YAML
trap 'for b in "$work"/bin*; do "$b" down --state "$work/state-${b##*/}" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
cpu_ticks() {
	local t=0 p f
	for p in "$@"; do
		f=($(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null)) || continue
		[ -n "${f[0]:-}" ] && t=$((t + f[11] + f[12]))
	done
	echo $t
}
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
hz=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
	i=0
	for orig in "$@"; do
		i=$((i + 1))
		bin="$work/bin$i"
		S="$work/state-bin$i"
		rm -rf "$S"
		t0=$(now_ms)
		"$bin" up --config "$work/clawcage.yaml" --state "$S" >"$work/up-$i.log" 2>&1 &
		until [ "$("$bin" status --state "$S" --json 2>/dev/null | grep -c '"health": "ok"')" -ge 2 ]; do sleep 0.005; done
		ready=$(($(now_ms) - t0))
		sup=$("$bin" status --state "$S" --json | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p')
		comps=$("$bin" status --state "$S" --json | tr ',{' '\n\n' | sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p' | grep -vx "$sup" | tr '\n' ' ')
		c0=$(cpu_ticks $comps)
		runs=() mtimes=() clis=()
		for n in $(seq "$creates"); do
			ws="$S/sandboxes/b$n/workspace/started"
			t0=$(now_ms)
			"$bin" sandbox create "b$n" --state "$S" -- /bin/sh -c ': >/sandbox/started; exec sleep 600' >/dev/null &
			cp=$!
			until [ -e "$ws" ]; do sleep 0.001; done
			runs+=($(($(now_ms) - t0)))
			mtimes+=($(($(stat -c %.3Y "$ws" | tr -d .) - t0)))
			wait $cp
			clis+=($(($(now_ms) - t0)))
			"$bin" sandbox delete "b$n" --state "$S" >/dev/null
		done
		alive=0
		for p in $comps; do [ -e /proc/"$p" ] && alive=$((alive + 1)); done
		cpu="$((($(cpu_ticks $comps) - c0) * 1000 / hz / creates)) ms"
		[ "$alive" = 2 ] || cpu="n/a (components were restarted)"
		echo "$orig round $r: up to ready ${ready} ms, create to running median $(med "${runs[@]}") ms (mtime $(med "${mtimes[@]}") ms), CLI $(med "${clis[@]}") ms, router+policy CPU per create+delete $cpu, load $(cut -d' ' -f1 /proc/loadavg)"
		"$bin" down --state "$S" >/dev/null
		wait
	done
done
