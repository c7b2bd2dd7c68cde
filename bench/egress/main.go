// Command egress-bench measures CONNECT setup latency and tunnel
// throughput side by side: direct, through clawcage's egress proxy, a bare
// Go relay with no policy (the floor any Go proxy pays), tinyproxy and
// smokescreen. Every proxy runs as its own process; targets are IP
// literals, so no DNS is involved. Run it through run.sh.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	relay := flag.String("relay", "", "run the bare relay on this address and nothing else")
	upstream := flag.String("upstream", "", "run the upstream (echo/sink) on this address and nothing else")
	clawcage := flag.String("clawcage", "", "clawcage binary")
	baseline := flag.String("baseline", "", "a second clawcage binary (e.g. an older commit) run side by side as clawcage-base")
	gomaxprocs := flag.Int("proxy-gomaxprocs", 0, "GOMAXPROCS for every Go proxy (clawcage, clawcage-base, go-relay, smokescreen); 0 leaves the default (all CPUs)")
	upInProc := flag.Bool("upstream-in-process", false, "serve the upstream inside the bench process (the method before 2026-11-26; flatters direct)")
	smokescreen := flag.String("smokescreen", "", "smokescreen binary (optional)")
	tinyproxy := flag.String("tinyproxy", "", "tinyproxy binary (optional)")
	n := flag.Int("n", 2000, "CONNECT setups per target")
	rounds := flag.Int("rounds", 10, "rounds the setups are interleaved over")
	size := flag.Int64("bytes", 256<<20, "bytes per throughput run")
	runs := flag.Int("runs", 5, "throughput runs per target")
	loop := flag.String("loop", "", "only run the setup loop against `PROXY` (\"direct\" for none) to the upstream of -to, -n times, then print p50 (for perf/strace on a proxy)")
	to := flag.String("to", "", "upstream address for -loop and -ab (an egress-bench -upstream)")
	gap := flag.Duration("gap", 0, "with -ab -rounds 0: pause between setups (spaced requests, as an agent makes them)")
	ab := flag.String("ab", "", "A/B proxies that are already running, `NAME=PID@ADDR,...` (the first is the reference): -rounds rounds of -n/-rounds setups through each in turn (-rounds 0: -n setups, one per target in turn), to the upstream of -to; per target the medians over rounds of CPU/conn, switches/conn and p50, and of the per-round difference to the reference")
	flag.Parse()
	if *ab != "" {
		if err := runAB(*ab, *to, *n, *rounds, *gap); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *loop != "" {
		if err := loopSetups(*loop, *to, *n); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *relay != "" {
		log.Fatal(serveRelay(*relay))
	}
	if *upstream != "" {
		ln, err := net.Listen("tcp", *upstream)
		if err != nil {
			log.Fatal(err)
		}
		serveUpstream(ln)
	}
	if *clawcage == "" {
		log.Fatal("-clawcage is required")
	}
	if *gomaxprocs > 0 {
		proxyEnv = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", *gomaxprocs))
	}
	if err := run(*clawcage, *baseline, *smokescreen, *tinyproxy, *upInProc, *n, *rounds, *size, *runs); err != nil {
		log.Fatal(err)
	}
}

// proxyEnv is the environment of the proxies (nil: the bench's own).
var proxyEnv []string

type target struct {
	name  string
	proxy string // "" = direct
	cmd   *exec.Cmd
}

func run(clawcage, baseline, smokescreen, tinyproxy string, upInProc bool, n, rounds int, size int64, runs int) error {
	dir, err := os.MkdirTemp("", "egress-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, _ := os.Executable()
	var upAddr string
	var upCmd *exec.Cmd
	if upInProc {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go serveUpstream(ln)
		upAddr = ln.Addr().String()
	} else {
		// The upstream is its own process, as a real server is: a
		// client and server in one Go process hand bytes over inside one
		// scheduler, which no proxy path can.
		upAddr = freeAddr()
		upCmd = exec.Command(self, "-upstream", upAddr)
		upCmd.Stderr = os.Stderr
		if err := upCmd.Start(); err != nil {
			return fmt.Errorf("start upstream: %w", err)
		}
		defer func() { upCmd.Process.Kill(); upCmd.Wait() }()
		if err := waitListen(upAddr); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	}
	_, upPortS, _ := net.SplitHostPort(upAddr)
	upPort, _ := strconv.Atoi(upPortS)

	targets := []*target{{name: "direct"}}
	defer func() {
		for _, t := range targets {
			if t.cmd != nil && t.cmd.Process != nil {
				t.cmd.Process.Kill()
				t.cmd.Wait()
			}
		}
	}()
	start := func(name string, addr string, c *exec.Cmd) error {
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return err
		}
		c.Stdout, c.Stderr = logf, logf
		c.Env = proxyEnv
		if err := c.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		targets = append(targets, &target{name: name, proxy: addr, cmd: c})
		if err := waitListen(addr); err != nil {
			data, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("%s: %w\n%s", name, err, data)
		}
		return nil
	}

	cfg := filepath.Join(dir, "clawcage.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "sandboxes:\n  default:\n    policy:\n      network:\n        - {name: bench, cidrs: [127.0.0.0/8], ports: [%d]}\n", upPort), 0o600)
	startCC := func(name, bin string) error {
		addr := freeAddr()
		return start(name, addr, exec.Command(bin, "policy-engine", "--config", cfg, "--state", filepath.Join(dir, name+"-state"),
			"--listen", "default="+addr, "--max-tunnels", "100000", "--request-rate", "1e9", "--request-burst", "1000000000"))
	}
	if err := startCC("clawcage", clawcage); err != nil {
		return err
	}
	if baseline != "" {
		if err := startCC("clawcage-base", baseline); err != nil {
			return err
		}
	}
	relayAddr := freeAddr()
	if err := start("go-relay", relayAddr, exec.Command(self, "-relay", relayAddr)); err != nil {
		return err
	}
	if smokescreen != "" {
		a := freeAddr()
		_, port, _ := net.SplitHostPort(a)
		if err := start("smokescreen", a, exec.Command(smokescreen, "--listen-ip", "127.0.0.1", "--listen-port", port, "--allow-range", "127.0.0.0/8")); err != nil {
			return err
		}
	}
	if tinyproxy != "" {
		a := freeAddr()
		_, port, _ := net.SplitHostPort(a)
		conf := filepath.Join(dir, "tinyproxy.conf")
		os.WriteFile(conf, fmt.Appendf(nil, "Port %s\nListen 127.0.0.1\nTimeout 600\nMaxClients 1000\nAllow 127.0.0.1\nConnectPort %d\nLogLevel Critical\nLogFile \"%s\"\nPidFile \"%s\"\n",
			port, upPort, filepath.Join(dir, "tinyproxy.out"), filepath.Join(dir, "tinyproxy.pid")), 0o644)
		if err := start("tinyproxy", a, exec.Command(tinyproxy, "-d", "-c", conf)); err != nil {
			return err
		}
	}

	// Warm up every target, then interleave rounds so drift hits all alike.
	samples := map[string][]time.Duration{}
	for _, t := range targets {
		for i := 0; i < 50; i++ {
			if _, err := setup(t.proxy, upAddr); err != nil {
				return fmt.Errorf("%s warm-up: %w", t.name, err)
			}
		}
	}
	// The unit every proxy pays: a one-byte round trip between two
	// processes over loopback (a wake-up of the peer and one of us).
	rtt, err := pingPong(upAddr, 2000)
	if err != nil {
		return fmt.Errorf("ping-pong: %w", err)
	}
	per := n / rounds
	cpu := map[string][]time.Duration{}     // proxy process CPU per setup, one value per round
	sched := map[string][]float64{}         // times the proxy's threads were scheduled in, per setup
	statTotal := map[string]time.Duration{} // proxy CPU from /proc/PID/stat (counts exited threads)
	for r := 0; r < rounds; r++ {
		for _, t := range targets {
			c0, n0 := procCPU(t.cmd)
			t0 := statCPU(t.cmd)
			for i := 0; i < per; i++ {
				d, err := setup(t.proxy, upAddr)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				samples[t.name] = append(samples[t.name], d)
			}
			c1, n1 := procCPU(t.cmd)
			statTotal[t.name] += statCPU(t.cmd) - t0
			cpu[t.name] = append(cpu[t.name], (c1-c0)/time.Duration(per))
			sched[t.name] = append(sched[t.name], float64(n1-n0)/float64(per))
		}
	}
	tput := map[string][]float64{}
	for r := 0; r < runs; r++ {
		for _, t := range targets {
			mbps, err := throughput(t.proxy, upAddr, size)
			if err != nil {
				return fmt.Errorf("%s throughput: %w", t.name, err)
			}
			tput[t.name] = append(tput[t.name], mbps)
		}
	}

	direct := pct(samples["direct"], 50)
	relayP50 := pct(samples["go-relay"], 50)
	smokeT := median(tput["smokescreen"])
	where := "its own process"
	if upInProc {
		where = "the bench process"
	}
	fmt.Printf("upstream in %s; loopback 1-byte round trip to it: p50 %s, p90 %s (2000 on one connection)\n", where, us(pct(rtt, 50)), us(pct(rtt, 90)))
	fmt.Printf("CONNECT setup (dial + CONNECT + 200 + 1-byte echo through the tunnel), %d per target, %d interleaved rounds\n", per*rounds, rounds)
	fmt.Printf("%-13s %10s %10s %10s %12s %12s %14s %12s %12s\n", "target", "p50", "p90", "p99", "p50-direct", "p50-relay", "proxy CPU/conn", "(stat)", "switches/conn")
	defer fmt.Printf("(proxy CPU/conn and switches/conn: medians over the rounds of the proxy's on-CPU time and of the times its threads\n were scheduled in, live threads, /proc/PID/task/*/schedstat, per setup; (stat): total user+system CPU from /proc/PID/stat\n over all setups, 10 ms ticks, which also counts threads that exited, e.g. tinyproxy's thread per connection)\n")
	for _, t := range targets {
		s := samples[t.name]
		p50 := pct(s, 50)
		c, st, sw := "-", "-", "-"
		if t.cmd != nil {
			c = us(pct(cpu[t.name], 50))
			st = us(statTotal[t.name] / time.Duration(len(s)))
			sw = fmt.Sprintf("%.1f", median(sched[t.name]))
		}
		fmt.Printf("%-13s %10s %10s %10s %12s %12s %14s %12s %12s\n", t.name, us(p50), us(pct(s, 90)), us(pct(s, 99)), us(p50-direct), us(p50-relayP50), c, st, sw)
	}
	fmt.Printf("\ntunnel throughput (%d MiB one way, %d runs, median)\n", size>>20, runs)
	fmt.Printf("%-12s %12s %14s %16s\n", "target", "MiB/s", "x direct", "x smokescreen")
	dT := median(tput["direct"])
	for _, t := range targets {
		m := median(tput[t.name])
		vs := "-"
		if smokeT > 0 {
			vs = fmt.Sprintf("%.2f", m/smokeT)
		}
		fmt.Printf("%-12s %12.0f %14.2f %16s\n", t.name, m, m/dT, vs)
	}
	return nil
}

// procCPU returns the on-CPU time a process's threads have used so far,
// in nanoseconds (schedstat, not the 10 ms ticks of /proc/PID/stat), and
// how many times they were scheduled in.
func procCPU(c *exec.Cmd) (time.Duration, int64) {
	if c == nil || c.Process == nil {
		return 0, 0
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", c.Process.Pid))
	var sum, switches int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		var ns, wait, n int64
		fmt.Sscan(string(data), &ns, &wait, &n)
		sum += ns
		switches += n
	}
	return time.Duration(sum), switches
}

// statCPU returns a process's user+system CPU from /proc/PID/stat (10 ms
// ticks), threads that exited included.
func statCPU(c *exec.Cmd) time.Duration {
	if c == nil || c.Process == nil {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(data[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/1e3) }

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[min(len(c)-1, len(c)*p/100)]
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[len(c)/2]
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListen(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after 20s", addr)
}

// open dials the upstream directly or through proxy with CONNECT.
func open(proxy, upstream string) (net.Conn, *bufio.Reader, error) {
	if proxy == "" {
		c, err := net.Dial("tcp", upstream)
		if err != nil {
			return nil, nil, err
		}
		return c, bufio.NewReader(c), nil
	}
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", upstream, upstream)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != 200 {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	return c, br, nil
}

func setup(proxy, upstream string) (time.Duration, error) {
	t0 := time.Now()
	c, br, err := open(proxy, upstream)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{'e'}); err != nil {
		return 0, err
	}
	b, err := br.ReadByte()
	if err != nil || b != 'e' {
		return 0, fmt.Errorf("echo: %q %v", b, err)
	}
	return time.Since(t0), nil
}

// runAB measures proxies that run elsewhere (e.g. two builds and the
// relay started by hand) in interleaved rounds; differences are paired by
// round, so load that comes and goes hits every target alike.
func runAB(spec, upstream string, n, rounds int, gap time.Duration) error {
	type abTarget struct {
		name, addr string
		cmd        *exec.Cmd // only Process.Pid is used
		cpu, sw    []float64 // per round, per setup
		p50        []float64
	}
	var ts []*abTarget
	for _, f := range strings.Split(spec, ",") {
		name, rest, ok1 := strings.Cut(f, "=")
		pid, addr, ok2 := strings.Cut(rest, "@")
		p, err := strconv.Atoi(pid)
		if !ok1 || !ok2 || err != nil {
			return fmt.Errorf("-ab %q: want NAME=PID@ADDR", f)
		}
		ts = append(ts, &abTarget{name: name, addr: addr, cmd: &exec.Cmd{Process: &os.Process{Pid: p}}})
	}
	per := max(n/max(rounds, 1), 1)
	for _, t := range ts {
		for i := 0; i < 50; i++ {
			if _, err := setup(t.addr, upstream); err != nil {
				return fmt.Errorf("%s warm-up: %w", t.name, err)
			}
		}
	}
	if rounds == 0 {
		// One setup per target in turn: every target meets the same
		// load within milliseconds. A visit's CPU and switches run from
		// the start of its setup to the start of the target's next one
		// (the connection's teardown included); medians over visits.
		type mark struct {
			cpu time.Duration
			sw  int64
		}
		last := make([]mark, len(ts))
		lat := make([][]time.Duration, len(ts))
		for i := 0; i <= n; i++ {
			for j, t := range ts {
				c, sw := procCPU(t.cmd)
				if i > 0 {
					t.cpu = append(t.cpu, float64(c-last[j].cpu)/1e3)
					t.sw = append(t.sw, float64(sw-last[j].sw))
				}
				last[j] = mark{c, sw}
				if i == n {
					continue
				}
				time.Sleep(gap)
				d, err := setup(t.addr, upstream)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				lat[j] = append(lat[j], d)
			}
		}
		ref := ts[0]
		fmt.Printf("%d setups per target, one per target in turn, %s apart (µs; CPU: median per connection; sw: mean)\n", n, gap)
		fmt.Printf("%-14s %9s %9s %9s %9s %9s %9s %9s\n", "target", "p25", "p50", "Δp50", "CPU/conn", "ΔCPU", "sw/conn", "Δsw")
		mean := func(s []float64) float64 {
			var x float64
			for _, v := range s {
				x += v
			}
			return x / float64(len(s))
		}
		for j, t := range ts {
			fmt.Printf("%-14s %9.1f %9.1f %+9.1f %9.1f %+9.1f %9.2f %+9.2f\n", t.name, float64(pct(lat[j], 25))/1e3, float64(pct(lat[j], 50))/1e3,
				float64(pct(lat[j], 50)-pct(lat[0], 50))/1e3, median(t.cpu), median(t.cpu)-median(ref.cpu), mean(t.sw), mean(t.sw)-mean(ref.sw))
		}
		return nil
	}
	for r := 0; r < rounds; r++ {
		for _, t := range ts {
			c0, n0 := procCPU(t.cmd)
			s := make([]time.Duration, 0, per)
			for i := 0; i < per; i++ {
				d, err := setup(t.addr, upstream)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				s = append(s, d)
			}
			c1, n1 := procCPU(t.cmd)
			t.cpu = append(t.cpu, float64(c1-c0)/1e3/float64(per))
			t.sw = append(t.sw, float64(n1-n0)/float64(per))
			t.p50 = append(t.p50, float64(pct(s, 50))/1e3)
		}
	}
	diff := func(a, b []float64) []float64 {
		d := make([]float64, len(a))
		for i := range a {
			d[i] = a[i] - b[i]
		}
		return d
	}
	ref := ts[0]
	fmt.Printf("%d rounds of %d setups per target; medians over rounds (µs); Δ = paired per-round difference to %s\n", rounds, per, ref.name)
	fmt.Printf("%-14s %9s %9s %9s %9s %9s %9s\n", "target", "p50", "Δp50", "CPU/conn", "ΔCPU", "sw/conn", "Δsw")
	for _, t := range ts {
		fmt.Printf("%-14s %9.1f %+9.1f %9.1f %+9.1f %9.2f %+9.2f\n", t.name, median(t.p50), median(diff(t.p50, ref.p50)),
			median(t.cpu), median(diff(t.cpu, ref.cpu)), median(t.sw), median(diff(t.sw, ref.sw)))
	}
	return nil
}

// loopSetups runs n setups through proxy ("direct": none) to upstream
// and prints their p50, p90 and the wall time.
func loopSetups(proxy, upstream string, n int) error {
	if proxy == "direct" {
		proxy = ""
	}
	s := make([]time.Duration, 0, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		d, err := setup(proxy, upstream)
		if err != nil {
			return err
		}
		s = append(s, d)
	}
	fmt.Printf("%d setups in %s: p50 %s p90 %s\n", n, time.Since(t0).Round(time.Millisecond), us(pct(s, 50)), us(pct(s, 90)))
	return nil
}

func throughput(proxy, upstream string, size int64) (float64, error) {
	c, br, err := open(proxy, upstream)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	hdr := make([]byte, 9)
	hdr[0] = 's'
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	if _, err := c.Write(hdr); err != nil {
		return 0, err
	}
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			return 0, err
		}
		left -= n
	}
	if b, err := br.ReadByte(); err != nil || b != 'k' {
		return 0, fmt.Errorf("ack: %q %v", b, err)
	}
	return float64(size) / (1 << 20) / time.Since(t0).Seconds(), nil
}

// pingPong measures n one-byte round trips to the upstream on one
// connection.
func pingPong(upstream string, n int) ([]time.Duration, error) {
	c, err := net.Dial("tcp", upstream)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{'p'}); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	b := []byte{0}
	for i := 0; i < n+50; i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		if i >= 50 {
			out = append(out, time.Since(t0))
		}
	}
	return out, nil
}

// serveUpstream serves: 'e' → echo one byte; 'p' → echo every byte;
// 's' + 8-byte length → read and discard that many bytes, then answer 'k'.
func serveUpstream(ln net.Listener) {
	{
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [9]byte
				if _, err := io.ReadFull(c, b[:1]); err != nil {
					return
				}
				switch b[0] {
				case 'p':
					io.Copy(c, c)
				case 'e':
					c.Write(b[:1])
					io.Copy(io.Discard, c)
				case 's':
					if _, err := io.ReadFull(c, b[1:9]); err != nil {
						return
					}
					n := int64(binary.BigEndian.Uint64(b[1:9]))
					if _, err := io.CopyN(io.Discard, c, n); err != nil {
						return
					}
					c.Write([]byte{'k'})
				}
			}()
		}
	}
}

// serveRelay is the bare Go CONNECT relay: parse, dial, 200, copy. No
// policy, no logging, no limits.
func serveRelay(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil || req.Method != http.MethodConnect {
				return
			}
			up, err := net.Dial("tcp", req.Host)
			if err != nil {
				io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
				return
			}
			defer up.Close()
			io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
			if n := br.Buffered(); n > 0 {
				b, _ := br.Peek(n)
				up.Write(b)
			}
			done := make(chan struct{})
			go func() {
				io.Copy(up, c)
				if tc, ok := up.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				close(done)
			}()
			io.Copy(c, up)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			<-done
		}()
	}
}
