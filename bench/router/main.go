// Command router measures the latency the privacy router adds: the same
// requests go to a fake OpenAI-compatible provider directly and through a
// `clawcage router` process (with -nginx, also through nginx as a minimal C
// reverse proxy; with -peer, through another gateway already pointed at the
// printed fake provider URL), sequentially and at a
// fixed open-loop rate. It reports p50/p99 per path and the difference, and
// the router's peak RSS. Not a test: run it by hand (see bench/README.md).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clawcage/clawcage/internal/router/routertest"
)

func main() {
	bin := flag.String("clawcage", "", "path to the clawcage binary (required)")
	seq := flag.Int("n", 2000, "sequential requests per scenario")
	rate := flag.Int("rate", 1000, "open-loop requests per second")
	dur := flag.Duration("duration", 5*time.Second, "duration of each open-loop run")
	sizes := flag.String("sizes", "1024,10240", "response sizes in bytes")
	peer := flag.String("peer", "", "base URL of another gateway to compare (OpenAI-compatible, forwarding to the fake provider)")
	peerPID := flag.Int("peer-pid", 0, "pid of the peer gateway, for RSS")
	peerHeaders := flag.String("peer-headers", "", "extra request headers for the peer, 'K: V;K2: V2'")
	fakeAddr := flag.String("fake-addr", "127.0.0.1:0", "address of the fake provider")
	hold := flag.Bool("hold", false, "start the fake provider, print its URL and wait (to configure a peer)")
	floorUp := flag.String("floor-upstream", "", "internal: run as the floor proxy to this upstream URL")
	floorListen := flag.String("floor-listen", "", "internal: address the floor proxy listens on")
	leanUp := flag.String("leanfloor-upstream", "", "internal: run as the lean Go floor proxy to this upstream URL")
	lean := flag.Bool("lean-floor", false, "also measure the lean Go floor: a minimal Go HTTP/1.1 proxy without net/http's server and client (path \"leanfloor\")")
	noFloor := flag.Bool("no-floor", false, "skip the bare reverse-proxy floor")
	nginxBin := flag.String("nginx", "", "path to an nginx binary: also measure it as a minimal C reverse proxy to the fake provider (path \"nginx\")")
	procs := flag.Int("proxy-gomaxprocs", 0, "GOMAXPROCS for the floor and router processes (0: Go's default)")
	baseline := flag.String("baseline", "", "path to another clawcage binary measured side by side as path \"baseline\" (e.g. the previous commit's)")
	baselineEnv := flag.String("baseline-env", "", "extra environment of the baseline router, 'K=V,K2=V2' (e.g. GOMAXPROCS=2 to compare a setting)")
	flag.Parse()

	if *floorUp != "" {
		fatal(serveFloor(*floorUp, *floorListen))
	}
	if *leanUp != "" {
		fatal(serveLeanFloor(*leanUp, *floorListen))
	}

	fake, err := routertest.StartAt(routertest.OpenAI, *fakeAddr)
	if err != nil {
		fatal(err)
	}
	defer fake.Close()
	fake.Chunks = 10
	fake.NoRecord = true
	if *hold {
		fmt.Println(fake.URL)
		select {}
	}
	if *bin == "" {
		fatal(errors.New("-clawcage is required"))
	}
	var env []string // of the floor and router processes; nil: the bench's own
	if *procs > 0 {
		env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(*procs))
	}
	rt, err := startRouter(*bin, fake.URL, env)
	if err != nil {
		fatal(err)
	}
	defer rt.stop()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2048, MaxIdleConns: 4096, IdleConnTimeout: time.Minute, DisableCompression: true}}
	paths := []target{{"direct", fake.URL, "gpt-bench", 0, nil}}
	if !*noFloor {
		self, err := os.Executable()
		if err != nil {
			fatal(err)
		}
		cmd := exec.Command(self, "-floor-upstream", fake.URL)
		cmd.Env = env
		fl, err := startProc(cmd, "-floor-listen", "")
		if err != nil {
			fatal(err)
		}
		defer fl.stop()
		paths = append(paths, target{"floor", fl.url, "gpt-bench", fl.pid, nil})
	}
	if *lean {
		self, err := os.Executable()
		if err != nil {
			fatal(err)
		}
		cmd := exec.Command(self, "-leanfloor-upstream", fake.URL)
		cmd.Env = env
		lf, err := startProc(cmd, "-floor-listen", "")
		if err != nil {
			fatal(err)
		}
		defer lf.stop()
		paths = append(paths, target{"leanfloor", lf.url + "/v1", "gpt-bench", lf.pid, nil})
	}
	if *nginxBin != "" {
		ng, err := startNginx(*nginxBin, fake.URL)
		if err != nil {
			fatal(err)
		}
		defer ng.stop()
		paths = append(paths, target{"nginx", ng.url + "/v1", "gpt-bench", ng.pid, nil})
	}
	if *baseline != "" {
		benv := env
		if *baselineEnv != "" {
			benv = append(append([]string(nil), os.Environ()...), env...)
			benv = append(benv, strings.Split(*baselineEnv, ",")...)
		}
		bl, err := startRouter(*baseline, fake.URL, benv)
		if err != nil {
			fatal(err)
		}
		defer bl.stop()
		paths = append(paths, target{"baseline", bl.url + "/v1", "bench", bl.pid, nil})
	}
	paths = append(paths, target{"clawcage", rt.url + "/v1", "bench", rt.pid, nil})
	if *peer != "" {
		hdr := http.Header{}
		for _, kv := range strings.Split(*peerHeaders, ";") {
			if k, v, ok := strings.Cut(kv, ":"); ok {
				hdr.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		paths = append(paths, target{"peer", strings.TrimSuffix(*peer, "/"), "gpt-bench", *peerPID, hdr})
	}
	fmt.Printf("# router bench: %d sequential, %d req/s for %s; GOMAXPROCS host cores=%d\n", *seq, *rate, *dur, numCPU())
	fmt.Printf("%-8s %-6s %-6s %-9s %9s %9s %9s %9s %7s %9s %11s %10s %9s\n", "mode", "size", "stream", "path", "p50_ms", "p99_ms", "+p50_ms", "+p99_ms", "errors", "rss_MiB", "cpu_us/req", "vcsw/req", "rw/req")
	for _, s := range strings.Split(*sizes, ",") {
		size, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal(err)
		}
		fake.Text = strings.Repeat("x", size)
		for _, stream := range []bool{false, true} {
			for _, mode := range []string{"seq", "rate"} {
				var base result
				for i, p := range paths {
					body := requestBody(p.model, stream)
					// Warm up connections and caches.
					runSeq(client, p, body, stream, 200)
					var r result
					cpu0 := cpuTicks(p.pid)
					wake0 := wakeCounts(p.pid)
					if mode == "seq" {
						r = runSeq(client, p, body, stream, *seq)
					} else {
						r = runRate(client, p, body, stream, *rate, *dur)
					}
					if i == 0 {
						base = r
					}
					add50, add99 := "-", "-"
					if i > 0 {
						add50 = ms(r.p(50) - base.p(50))
						add99 = ms(r.p(99) - base.p(99))
					}
					rss := "-"
					if r.rssKiB > 0 {
						rss = fmt.Sprintf("%.1f", float64(r.rssKiB)/1024)
					}
					cpu := "-"
					if p.pid != 0 && len(r.lat) > 0 {
						cpu = fmt.Sprintf("%.0f", float64(cpuTicks(p.pid)-cpu0)*1e6/100/float64(len(r.lat)+r.errors))
					}
					ctxsw, rw := "-", "-"
					if wake1 := wakeCounts(p.pid); p.pid != 0 && len(r.lat) > 0 && wake1.ok && wake0.ok {
						n := float64(len(r.lat) + r.errors)
						ctxsw = fmt.Sprintf("%.2f", float64(wake1.ctxsw-wake0.ctxsw)/n)
						rw = fmt.Sprintf("%.2f", float64(wake1.syscrw-wake0.syscrw)/n)
					}
					fmt.Printf("%-8s %-6d %-6v %-9s %9s %9s %9s %9s %7d %9s %11s %10s %9s\n", mode, size, stream, p.name, ms(r.p(50)), ms(r.p(99)), add50, add99, r.errors, rss, cpu, ctxsw, rw)
					if r.firstErr != nil {
						fmt.Fprintf(os.Stderr, "# %s: first error: %v\n", p.name, r.firstErr)
					}
				}
			}
		}
	}
}

type target struct {
	name, base, model string
	pid               int
	header            http.Header
}

func requestBody(model string, stream bool) []byte {
	msg := strings.Repeat("Tell me about the weather in Paris. ", 8)
	s := fmt.Sprintf(`{"model":%q,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":%q}],"max_tokens":256`, model, msg)
	if stream {
		s += `,"stream":true,"stream_options":{"include_usage":true}`
	}
	return []byte(s + "}")
}

type result struct {
	lat      []time.Duration
	errors   int
	firstErr error
	rssKiB   int64
}

func (r *result) p(q int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	i := (len(r.lat)*q + 99) / 100
	return r.lat[min(max(i-1, 0), len(r.lat)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

// once sends one request and reads the whole response.
func once(c *http.Client, p target, body []byte, stream bool) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, p.base+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range p.header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	el := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 || n == 0 {
		return 0, fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
	}
	return el, nil
}

func runSeq(c *http.Client, p target, body []byte, stream bool, n int) result {
	r := result{lat: make([]time.Duration, 0, n)}
	for range n {
		d, err := once(c, p, body, stream)
		if err != nil {
			if r.errors == 0 {
				r.firstErr = err
			}
			r.errors++
			continue
		}
		r.lat = append(r.lat, d)
	}
	r.rssKiB = rss(p.pid)
	return r
}

func runRate(c *http.Client, p target, body []byte, stream bool, rate int, dur time.Duration) result {
	total := int(dur.Seconds() * float64(rate))
	lat := make([]time.Duration, total)
	ok := make([]bool, total)
	var errs atomic.Int64
	var peak atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := rss(p.pid); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := once(c, p, body, stream)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			lat[i], ok[i] = d, true
		}()
	}
	wg.Wait()
	close(stop)
	r := result{errors: int(errs.Load()), rssKiB: peak.Load()}
	if e := firstErr.Load(); e != nil {
		r.firstErr = *e
	}
	for i := range lat {
		if ok[i] {
			r.lat = append(r.lat, lat[i])
		}
	}
	return r
}

// wakes are a process's load-independent costs: voluntary context
// switches of all its threads (a thread blocking: a wake-up to come;
// involuntary ones are preemptions, which depend on the machine's load;
// /proc/PID/task/*/status) and its
// read- and write-class syscalls (/proc/PID/io syscr+syscw: read, write,
// recvfrom, sendto, pread, pwrite...). Unlike CPU time they barely change
// with the machine's load, so they compare builds on a shared machine.
type wakes struct {
	ctxsw, syscrw int64
	ok            bool
}

func wakeCounts(pid int) wakes {
	if pid == 0 {
		return wakes{}
	}
	var w wakes
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return w
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				w.ctxsw += n
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return w
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			w.syscrw += n
		} else if v, ok := strings.CutPrefix(line, "syscw:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			w.syscrw += n
		}
	}
	w.ok = true
	return w
}

// cpuTicks is the user+system CPU time of pid in clock ticks (USER_HZ=100).
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// rss is the current resident set of pid in KiB (0 if unknown).
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

type routerProc struct {
	cmd   *exec.Cmd
	url   string
	pid   int
	state string
}

func (r *routerProc) stop() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
	}
	if r.state != "" {
		os.RemoveAll(r.state)
	}
}

// startRouter runs `clawcage router` with a one-route config pointing at
// the fake provider (no key: the fake does not check).
func startRouter(bin, upstream string, env []string) (*routerProc, error) {
	state, err := os.MkdirTemp("", "clawcage-bench-")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("router:\n  providers:\n    fake: {kind: openai, base_url: %q}\n  routes:\n    bench:\n      - {provider: fake, model: gpt-bench}\nsandboxes:\n  bench: {}\n", upstream)
	cfgPath := filepath.Join(state, "clawcage.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "router", "--config", cfgPath, "--state", state)
	cmd.Env = env
	p, err := startProc(cmd, "--listen", "bench=")
	if err != nil {
		return nil, err
	}
	p.state = state
	return p, nil
}

// startProc appends `flag prefix<addr>` (a free loopback address) to cmd,
// starts it and waits until it listens there.
func startProc(cmd *exec.Cmd, flag, prefix string) (*routerProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd.Args = append(cmd.Args, flag, prefix+addr)
	// Die with the bench, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = io.Discard
	if os.Getenv("BENCH_ROUTER_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return &routerProc{cmd: cmd, url: "http://" + addr, pid: cmd.Process.Pid}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, fmt.Errorf("%s did not listen on %s", cmd.Path, addr)
}

// serveFloor is the floor: a bare net/http + httputil.ReverseProxy to the
// fake provider with default settings (no policy, no logging, no ledger),
// run in its own process like the router. Its added latency and CPU are
// what any Go HTTP proxy pays on this machine.
func serveFloor(upstream, listen string) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("floor upstream: %w", err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(os.Stderr, "floor: ", 0) // discarded unless BENCH_ROUTER_LOG is set
	return http.ListenAndServe(listen, rp)
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench/router:", err)
	os.Exit(1)
}
