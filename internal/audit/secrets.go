package audit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Denied means a policy point (the egress proxy) refused the request.
const Denied = "denied"

// keyShapes match provider credentials by their published formats.
// They are compiled on first use, not at package initialization (which
// every clawcage start would pay for).
var keyShapes = sync.OnceValue(func() []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(`sk-ant-[A-Za-z0-9_-]{20,}`),              // Anthropic
		regexp.MustCompile(`sk-(proj-|svcacct-)?[A-Za-z0-9_-]{32,}`), // OpenAI
		regexp.MustCompile(`AKIA[0-9A-Z]{16}`),                       // AWS access key id
		regexp.MustCompile(`gh[pousr]_[A-Za-z0-9]{36}`),              // GitHub
		regexp.MustCompile(`xox[abprs]-[A-Za-z0-9-]{10,}`),           // Slack
		regexp.MustCompile(`AIza[0-9A-Za-z_-]{35}`),                  // Google
	}
})

func secretProbes() []Probe {
	return []Probe{
		{Name: "secrets-env", Usage: "[CANARY]", Doc: "printenv and every readable /proc/*/environ: no provider key (key-shaped value or the canary)",
			Expect: []string{Absent}, Run: secretsEnv},
		{Name: "secrets-files", Usage: "[CANARY [ROOT...]]", Doc: "scan every readable file (default from /) for the canary key's bytes or key-shaped strings",
			Expect: []string{Absent}, Run: secretsFiles},
		{Name: "unix-connect", Usage: "PATH", Doc: "connect to a host Unix socket by path (an admin or control socket)",
			Expect: []string{"ENOENT"}, Run: unixConnect},
		{Name: "proc-mem", Usage: "PID", Doc: "open and read /proc/PID/mem of a host process (a component that holds keys or rules)",
			Expect: []string{"ENOENT"}, Run: procMem},
		{Name: "proxy-deny", Usage: "HOST:PORT", Doc: "CONNECT through the egress proxy ($HTTPS_PROXY, default 127.0.0.1:3128) to a host the policy does not allow",
			Expect: []string{Denied}, Run: proxyDeny},
	}
}

// findSecret reports where in b a secret is: the canary, or a key shape
// when canary is empty. It never returns the secret itself.
func findSecret(b []byte, canary string) (string, bool) {
	if canary != "" {
		return "the canary", bytes.Contains(b, []byte(canary))
	}
	for _, re := range keyShapes() {
		if re.Match(b) {
			return "a value shaped like " + re.String(), true
		}
	}
	return "", false
}

func secretsEnv(_ context.Context, args []string) Observation {
	canary := argOr(args, 0, "")
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if what, ok := findSecret([]byte(v), canary); ok {
			return Observation{Outcome: Succeeded, Detail: "environment variable " + k + " holds " + what}
		}
	}
	pids, _ := visiblePids()
	read := 0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		read++
		if what, ok := findSecret(b, canary); ok {
			return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("/proc/%d/environ holds %s", pid, what)}
		}
	}
	return Observation{Outcome: Absent, Detail: fmt.Sprintf("%d variables and %d /proc/*/environ checked", len(os.Environ()), read)}
}

// scanLimits bound a filesystem scan.
const (
	scanMaxFile  = 4 << 20
	scanMaxTotal = 512 << 20
	scanMaxTime  = 60 * time.Second
)

func secretsFiles(ctx context.Context, args []string) Observation {
	canary := argOr(args, 0, "")
	roots := []string{"/"}
	if len(args) > 1 {
		roots = args[1:]
	}
	ctx, cancel := context.WithTimeout(ctx, scanMaxTime)
	defer cancel()
	var files, total int64
	var found string
	skip := map[string]bool{"/proc": true, "/sys": true, "/dev": true}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || found != "" {
				return nil
			}
			if ctx.Err() != nil || total > scanMaxTotal {
				return filepath.SkipAll
			}
			if d.IsDir() {
				if skip[p] {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer f.Close()
			b, _ := io.ReadAll(io.LimitReader(f, scanMaxFile))
			files++
			total += int64(len(b))
			if what, ok := findSecret(b, canary); ok {
				found = p + " holds " + what
			}
			return nil
		})
	}
	if found != "" {
		return Observation{Outcome: Succeeded, Detail: found}
	}
	detail := fmt.Sprintf("%d files, %d MiB scanned under %s", files, total>>20, strings.Join(roots, ","))
	if ctx.Err() != nil || total > scanMaxTotal {
		detail += " (scan bounded: stopped early)"
	}
	return Observation{Outcome: Absent, Detail: detail}
}

func unixConnect(ctx context.Context, args []string) Observation {
	if len(args) != 1 || !strings.HasPrefix(args[0], "/") {
		return errorf("usage: unix-connect /PATH")
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", args[0])
	if err != nil {
		return observe(err, "connect unix "+args[0])
	}
	c.Close()
	return Observation{Outcome: Succeeded, Detail: "connected to " + args[0]}
}

func proxyDeny(ctx context.Context, args []string) Observation {
	if len(args) != 1 {
		return errorf("usage: proxy-deny HOST:PORT")
	}
	proxy := os.Getenv("HTTPS_PROXY")
	if proxy == "" {
		proxy = os.Getenv("https_proxy")
	}
	if proxy == "" {
		proxy = "http://127.0.0.1:3128"
	}
	pu, err := url.Parse(proxy)
	if err != nil || pu.Host == "" {
		return errorf("proxy-deny: bad proxy URL %q", proxy)
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", pu.Host)
	if err != nil {
		return observe(err, "connect to the proxy "+pu.Host)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * dialTimeout))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", args[0], args[0])
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return observe(err, "read the proxy's answer")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	detail := fmt.Sprintf("CONNECT %s via %s: %s %s", args[0], pu.Host, resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode == http.StatusOK {
		return Observation{Outcome: Succeeded, Detail: detail}
	}
	if resp.StatusCode == http.StatusForbidden {
		return Observation{Outcome: Denied, Detail: detail}
	}
	return Observation{Outcome: fmt.Sprintf("http:%d", resp.StatusCode), Detail: detail}
}

// procMem opens /proc/PID/mem and reads from the first readable mapping.
// Inside a sandbox the host's pid is not in its pid namespace: ENOENT.
func procMem(_ context.Context, args []string) Observation {
	if len(args) != 1 {
		return errorf("usage: proc-mem PID")
	}
	pid, err := strconv.Atoi(args[0])
	if err != nil || pid <= 0 {
		return errorf("proc-mem: %q is not a pid", args[0])
	}
	dir := fmt.Sprintf("/proc/%d", pid)
	f, err := os.Open(dir + "/mem")
	if err != nil {
		return observe(err, "open "+dir+"/mem")
	}
	defer f.Close()
	cmd, _ := os.ReadFile(dir + "/cmdline")
	who := fmt.Sprintf("%s/mem opened (cmdline %.80q)", dir, strings.ReplaceAll(string(cmd), "\x00", " "))
	maps, err := os.ReadFile(dir + "/maps")
	if err != nil {
		return Observation{Outcome: Succeeded, Detail: who + "; maps: " + OutcomeOf(err)}
	}
	for line := range strings.SplitSeq(string(maps), "\n") {
		f1 := strings.Fields(line)
		if len(f1) < 2 || !strings.HasPrefix(f1[1], "r") {
			continue
		}
		start, _, ok := strings.Cut(f1[0], "-")
		addr, perr := strconv.ParseUint(start, 16, 64)
		if !ok || perr != nil {
			continue
		}
		b := make([]byte, 16)
		if _, err := f.ReadAt(b, int64(addr)); err != nil {
			return observe(err, who+"; read at "+start)
		}
		return Observation{Outcome: Succeeded, Detail: who + "; read 16 bytes at " + start}
	}
	return Observation{Outcome: Succeeded, Detail: who + "; no readable mapping"}
}
