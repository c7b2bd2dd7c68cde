#!/bin/sh
# Stack benchmark: `clawcage up` to ready, `sandbox create` to the command
# running, and the memory of supervisor + router + policy engine, idle and
# under load. Usage (as root, from anywhere): bench/stack/run.sh [CREATES]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
creates=${1:-20}
if [ "$(id -u)" != 0 ]; then
	echo "run as root: the stack creates namespaces and cgroups" >&2
	exit 1
fi
work=$(mktemp -d)
chmod 0711 "$work" # the components' uids must reach the binary and the state
state="$work/state"
bin="$work/clawcage"
cleanup() {
	"$bin" down --state "$state" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$repo" && go build -o "$bin" ./cmd/clawcage)

# A provider that is never reached: idle numbers need none, and the load
# below exercises the router's and the proxy's request paths without one.
cat >"$work/clawcage.yaml" <<'EOF'
router:
  providers:
    local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
  routes:
    default: [{provider: local, model: m}]
EOF

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
pids() {
	"$bin" status --state "$state" --json | tr ',{' '\n\n' | sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p'
}
# memory of the supervisor, router and policy engine: RSS (each counts the
# shared binary pages again) and PSS (shared pages split: the honest sum)
memory() {
	rss=0
	pss=0
	for p in $(pids | sort -u); do
		case "$(cat /proc/"$p"/comm 2>/dev/null)" in clawcage) ;; *) continue ;; esac
		grep -q 'sandbox-init' /proc/"$p"/cmdline 2>/dev/null && continue
		r=$(awk '/^Rss:/ {print $2}' /proc/"$p"/smaps_rollup)
		s=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup)
		rss=$((rss + r))
		pss=$((pss + s))
	done
	echo "$((rss / 1024)) MiB RSS, $((pss / 1024)) MiB PSS"
}
# CPU time (clock ticks, utime + stime) of the given live processes
cpu_ticks() {
	t=0
	for p in "$@"; do
		f=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null) || continue
		set -- $f
		t=$((t + ${12} + ${13}))
	done
	echo "$t"
}
ready() {
	out=$("$bin" status --state "$state" --json 2>/dev/null) || return 1
	[ "$(echo "$out" | grep -c '"health": "ok"')" -ge 2 ]
}

echo "kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. up to ready: both components answer their health checks.
t0=$(now_ms)
"$bin" up --config "$work/clawcage.yaml" --state "$state" >"$work/up.log" 2>&1 &
until ready; do sleep 0.005; done
echo "up to ready: $(($(now_ms) - t0)) ms"

# 2. sandbox create to the command running (it writes a file first thing).
sup=$("$bin" status --state "$state" --json | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p')
comps=$(pids | grep -vx "$sup" | tr '\n' ' ')
cpu0=$(cpu_ticks $comps)
: >"$work/creates"
i=0
while [ "$i" -lt "$creates" ]; do
	name="b$i"
	ws="$state/sandboxes/$name/workspace/started"
	t0=$(now_ms)
	# The CLI returns after the running components answered the hand-over
	# of the new listeners; the command may run before that, so poll alongside.
	"$bin" sandbox create "$name" --state "$state" -- /bin/sh -c ': >/sandbox/started; exec sleep 600' >/dev/null &
	until [ -e "$ws" ]; do sleep 0.001; done
	echo $(($(now_ms) - t0)) >>"$work/creates"
	# The file's mtime is when the command ran, without the polling's lag
	# (each poll forks a sleep); the kernel's coarse clock may put it up to
	# one tick early.
	echo $(($(stat -c %.3Y "$ws" | tr -d .) - t0)) >>"$work/creates-mtime"
	wait $!
	echo $(($(now_ms) - t0)) >>"$work/create-cli"
	"$bin" sandbox delete "$name" --state "$state" >/dev/null
	i=$((i + 1))
done
echo "sandbox create to command running: median $(median <"$work/creates") ms over $creates (min $(sort -n "$work/creates" | head -1), max $(sort -n "$work/creates" | tail -1))"
echo "sandbox create to the file's mtime (no polling lag): median $(median <"$work/creates-mtime") ms (min $(sort -n "$work/creates-mtime" | head -1), max $(sort -n "$work/creates-mtime" | tail -1))"
echo "sandbox create CLI returned (components were handed the new listeners): median $(median <"$work/create-cli") ms"
alive=0
for p in $comps; do [ -e /proc/"$p" ] && alive=$((alive + 1)); done
echo "router + policy engine CPU per create + delete: $((($(cpu_ticks $comps) - cpu0) * 1000 / $(getconf CLK_TCK) / creates)) ms (same processes throughout: $alive of 2 alive)"

# 3. memory, idle (one idle sandbox), then under load: a sandbox calling the
# router and the proxy in a loop for 10 s.
"$bin" sandbox create idle --state "$state" -- /bin/sleep 600 >/dev/null
sleep 3
echo "idle: $(memory)"
"$bin" sandbox create load --state "$state" -- /bin/sh -c '
	end=$(($(date +%s) + 10))
	while [ "$(date +%s)" -lt "$end" ]; do
		curl -s -o /dev/null http://inference.local:8080/v1/models
		curl -s -o /dev/null -x http://127.0.0.1:3128 http://denied.example.test/
	done; exec sleep 600' >/dev/null
peak=""
for _ in 1 2 3 4 5 6 7 8 9; do
	sleep 1
	peak="$(memory)"
done
echo "under load (after 9 s of router + proxy requests): $peak"
