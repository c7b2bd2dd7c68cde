package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
	"github.com/clawcage/clawcage/internal/vault/vaulttest"
)

const testSecret = "sk-cli-canary-5b8e2f1a9c7d3e60"

// fakeRouter serves the real admin API (real vault and ledger) on the admin
// socket of a temp state dir, as `clawcage router` would.
type fakeRouter struct {
	state  string
	vault  *vault.Vault
	ledger *usage.Ledger
}

func startFakeRouter(t *testing.T) *fakeRouter {
	t.Helper()
	state := t.TempDir()
	dir := filepath.Join(state, "router")
	v, err := vault.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := usage.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := admin.Listen(admin.SocketPath(state), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.NewHandler(admin.Deps{Vault: v, Ledger: l}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		l.Close()
		v.Close()
	})
	return &fakeRouter{state: state, vault: v, ledger: l}
}

// run executes the CLI with args, stdin in, and returns stdout+stderr.
func run(t *testing.T, in io.Reader, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(&out)
	root.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestKeysSetFromStdin(t *testing.T) {
	for _, tc := range []struct {
		name, stdin, want string
	}{
		{"piped with trailing newline", testSecret + "\n", testSecret},
		{"piped without newline", testSecret, testSecret},
		{"CRLF line ending", testSecret + "\r\n", testSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFakeRouter(t)
			out, err := run(t, strings.NewReader(tc.stdin), "--state", r.state, "keys", "set", "anthropic")
			if err != nil {
				t.Fatalf("keys set: %v\n%s", err, out)
			}
			keys := r.vault.Keys("anthropic")
			if len(keys) != 1 || string(keys[0].Secret) != tc.want {
				t.Fatalf("vault holds %d keys / wrong secret", len(keys))
			}
			if !strings.Contains(out, "stored anthropic key "+keys[0].ID) {
				t.Fatalf("output %q", out)
			}
			vaulttest.AssertNotInBytes(t, []byte(tc.want), "keys set output", []byte(out))
		})
	}
}

func TestKeysSetRefuses(t *testing.T) {
	r := startFakeRouter(t)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		says  string
	}{
		{"secret as an argument", "", []string{"keys", "set", "openai", testSecret}, "never from the command line"},
		{"secret as an argument with stdin too", testSecret, []string{"keys", "set", "openai", testSecret}, "never from the command line"},
		{"secret as a long flag", "", []string{"keys", "set", "openai", "--key=" + testSecret}, "arguments are not echoed"},
		{"secret as a shorthand flag", "", []string{"keys", "set", "openai", "-" + testSecret}, "arguments are not echoed"},
		{"empty stdin", "", []string{"keys", "set", "openai"}, "empty secret"},
		{"only a newline", "\n", []string{"keys", "set", "openai"}, "empty secret"},
		{"two trailing newlines (only one trimmed)", testSecret + "\n\n", []string{"keys", "set", "openai"}, "not visible ASCII"},
		{"embedded newline", "sk-a\nsk-b", []string{"keys", "set", "openai"}, "not visible ASCII"},
		{"oversized stdin", strings.Repeat("a", vault.MaxSecretLen+10), []string{"keys", "set", "openai"}, "more than"},
		{"bad provider name", testSecret, []string{"keys", "set", "../etc"}, "provider name"},
		{"missing provider", testSecret, []string{"keys", "set"}, "missing PROVIDER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, strings.NewReader(tc.stdin), append([]string{"--state", r.state}, tc.args...)...)
			if err == nil {
				t.Fatalf("accepted; output %q", out)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q does not say %q", err, tc.says)
			}
			vaulttest.AssertNotInBytes(t, []byte(testSecret), "error message", []byte(err.Error()+out))
			if n := len(r.vault.List()); n != 0 {
				t.Fatalf("vault holds %d keys after a refused set", n)
			}
		})
	}
}

// TestKeysSetFromTerminalWithoutEcho types the secret into a pty: the
// terminal must have echo off while it is read, and on again afterwards.
func TestKeysSetFromTerminalWithoutEcho(t *testing.T) {
	r := startFakeRouter(t)
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pty available: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()

	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"--state", r.state, "keys", "set", "anthropic"})
		root.SetIn(pts)
		root.SetOut(&out)
		root.SetErr(io.Discard)
		done <- root.ExecuteContext(context.Background())
	}()
	// Wait until echo is off before typing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo never turned off")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ptm.Write([]byte(testSecret + "\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("keys set: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("keys set did not finish")
	}
	// Whatever the terminal shows must not contain the secret.
	echoed := drain(t, ptm)
	vaulttest.AssertNotInBytes(t, []byte(testSecret), "terminal echo", echoed)
	if k := r.vault.Keys("anthropic"); len(k) != 1 || string(k[0].Secret) != testSecret {
		t.Fatal("typed secret not stored")
	}
	tio, _ := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if tio.Lflag&unix.ECHO == 0 {
		t.Fatal("terminal echo left off")
	}
}

func TestKeysListAndRm(t *testing.T) {
	r := startFakeRouter(t)
	a, _ := r.vault.Set("anthropic", []byte(testSecret))
	b, _ := r.vault.Set("anthropic", []byte("sk-second-0000000000"))
	o, _ := r.vault.Set("openai", []byte("sk-openai-1111111111"))

	out, err := run(t, nil, "--state", r.state, "keys", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PROVIDER", a.ID, a.Fingerprint, b.ID, o.ID, "openai"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	vaulttest.AssertNotInBytes(t, []byte(testSecret), "keys list", []byte(out))

	out, err = run(t, nil, "--state", r.state, "keys", "list", "--json")
	var infos []vault.KeyInfo
	if err != nil || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 3 || infos[0] != a {
		t.Fatalf("list --json = %v %s", err, out)
	}

	out, err = run(t, nil, "--state", r.state, "keys", "rotate-master")
	if err != nil || !strings.Contains(out, "3 keys re-sealed") || strings.Contains(out, a.Fingerprint) {
		t.Fatalf("rotate-master = %v %s", err, out)
	}
	if k := r.vault.Keys("anthropic"); len(k) != 2 || string(k[0].Secret) != testSecret {
		t.Fatal("rotation changed the keys")
	}

	out, err = run(t, nil, "--state", r.state, "keys", "rm", "anthropic", a.ID)
	if err != nil || !strings.Contains(out, "removed anthropic key "+a.ID) {
		t.Fatalf("rm one = %v %s", err, out)
	}
	if _, err := run(t, nil, "--state", r.state, "keys", "rm", "anthropic", a.ID); err == nil || !strings.Contains(err.Error(), "no such key") {
		t.Fatalf("rm again = %v", err)
	}
	out, err = run(t, nil, "--state", r.state, "keys", "rm", "anthropic")
	if err != nil || !strings.Contains(out, b.ID) {
		t.Fatalf("rm all = %v %s", err, out)
	}
	if l := r.vault.List(); len(l) != 1 || l[0].ID != o.ID {
		t.Fatalf("left: %+v", l)
	}
}

func TestKeysRouterNotRunning(t *testing.T) {
	state := t.TempDir()
	for _, args := range [][]string{{"keys", "list"}, {"keys", "set", "openai"}, {"keys", "rm", "openai"}, {"usage"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, err := run(t, strings.NewReader(testSecret), append([]string{"--state", state}, args...)...)
			want := "router not running: no socket at " + filepath.Join(state, "router", "admin.sock")
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "clawcage up") {
				t.Fatalf("err = %v, want %q", err, want)
			}
		})
	}
}

func TestUsageCommand(t *testing.T) {
	r := startFakeRouter(t)
	ctx := context.Background()
	now := time.Now()
	for _, rec := range []usage.Record{
		{Time: now.Add(-2 * time.Hour), Sandbox: "assistant", Route: "default", Provider: "anthropic", Model: "claude", TokensIn: 1000, TokensOut: 200, CostUSD: 0.006, Latency: 800 * time.Millisecond, Status: 200},
		{Time: now.Add(-72 * time.Hour), Sandbox: "assistant", Route: "default", Provider: "anthropic", Model: "claude", TokensIn: 10, CostUSD: 1, Status: 200},
		{Time: now.Add(-time.Hour), Sandbox: "evil", Route: "\x1b]0;pwned\x07route", Provider: "openai", Model: "m\x1b[2J", Status: 502, Error: "upstream"},
	} {
		if err := r.ledger.Record(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(t, nil, "--state", r.state, "usage")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, 0x07) {
		t.Fatalf("terminal escapes from sandbox-supplied names reached the table: %q", out)
	}
	for _, want := range []string{"SANDBOX", "assistant", `\x1b]0;pwned\x07route`, "TOTAL", "1.0060"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, nil, "--state", r.state, "usage", "--sandbox", "assistant", "--since", "24h", "--json")
	var rows []usage.SummaryRow
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].Requests != 1 || rows[0].TokensIn != 1000 {
		t.Fatalf("usage --json = %v %s", err, out)
	}
	if _, err := run(t, nil, "--state", r.state, "usage", "--since", "last week"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Fatalf("bad --since = %v", err)
	}
}

func TestTrimNewline(t *testing.T) {
	for in, want := range map[string]string{"a\n": "a", "a\r\n": "a", "a\n\n": "a\n", "a": "a", "\n": "", "a\r": "a\r"} {
		if got := string(trimNewline([]byte(in))); got != want {
			t.Errorf("trimNewline(%q) = %q, want %q", in, got, want)
		}
	}
}

// drain returns what the pty master has to read, waiting at most 200ms
// for more (a pty master is not pollable by the Go runtime: use poll(2)).
func drain(t *testing.T, f *os.File) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for {
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 || fds[0].Revents&unix.POLLIN == 0 {
			return out
		}
		m, err := unix.Read(int(f.Fd()), buf)
		if m <= 0 || err != nil {
			return out
		}
		out = append(out, buf[:m]...)
	}
}
