#!/usr/bin/env python3
"""CPU and wall time of the `clawcage sandbox create` CLI itself.

Usage (root, with a stack running on STATE that has a sandbox named "keep";
`clawcage sandbox create keep --state STATE -- /bin/sleep 1000`):

    bench/stack/cli-cpu.py STATE BIN... [-n N]

Each binary runs `sandbox create keep --state STATE` N times (default 40),
alternating, so machine load hits them alike. The supervisor answers 409
(the name exists): the CLI does all of a create's own work and the stack
starts nothing. CPU is the children's user + system time (getrusage).
"""
import resource
import statistics
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    n = 40
    if "-n" in args:
        i = args.index("-n")
        n = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    state, bins = args[0], args[1:]
    res = {b: ([], []) for b in bins}
    for _ in range(n):
        for b in bins:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            p = subprocess.run([b, "sandbox", "create", "keep", "--state", state],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t1 = time.monotonic()
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if b"already exists" not in p.stderr:
                sys.exit(f"{b}: unexpected answer {p.stderr!r}")
            res[b][0].append((t1 - t0) * 1000)
            res[b][1].append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
    for b in bins:
        wall, cpu = res[b]
        print(f"{b}: CPU median {statistics.median(cpu):.1f} ms (mean {statistics.mean(cpu):.1f}), "
              f"wall median {statistics.median(wall):.1f} ms (min {min(wall):.1f})")
    print("load", " ".join(open("/proc/loadavg").read().split()[:3]))


if __name__ == "__main__":
    main()
