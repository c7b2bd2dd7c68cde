package createcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/config"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Args
		ok   bool
	}{
		{"name only", []string{"sb"}, Args{Name: "sb", StateDir: DefaultStateDir}, true},
		{"command after dash", []string{"sb", "--state", "/s", "--", "/bin/sh", "-c", "x --env"},
			Args{Name: "sb", Command: []string{"/bin/sh", "-c", "x --env"}, StateDir: "/s"}, true},
		{"flags interspersed and repeated", []string{"--preset", "pypi", "sb", "--env=A=1,2", "--env", "B=", "--preset=npm", "--restart", "never", "--state=/x", "--state", "/y"},
			Args{Name: "sb", Presets: []string{"pypi", "npm"}, Env: []string{"A=1,2", "B="}, Restart: "never", StateDir: "/y"}, true},
		{"command without dash", []string{"sb", "/bin/true", "x"}, Args{Name: "sb", Command: []string{"/bin/true", "x"}, StateDir: DefaultStateDir}, true},
		{"flag value that looks like a flag", []string{"sb", "--restart", "--env"}, Args{Name: "sb", Restart: "--env", StateDir: DefaultStateDir}, true},
		{"single dash is an argument", []string{"sb", "-"}, Args{Name: "sb", Command: []string{"-"}, StateDir: DefaultStateDir}, true},
		{"empty dash tail", []string{"sb", "--"}, Args{Name: "sb", StateDir: DefaultStateDir}, true},
		{"help", []string{"--help"}, Args{}, false},
		{"help after name", []string{"sb", "--help"}, Args{}, false},
		{"short flag", []string{"sb", "-h"}, Args{}, false},
		{"short flag in command without dash", []string{"sb", "/bin/sh", "-c", "x"}, Args{}, false},
		{"unknown flag", []string{"sb", "--memory", "1G"}, Args{}, false},
		{"policy file is the full command's", []string{"sb", "--policy", "p.yaml"}, Args{}, false},
		{"flag without value", []string{"sb", "--env"}, Args{}, false},
		{"no name", nil, Args{}, false},
		{"no name before dash", []string{"--", "sb", "/bin/true"}, Args{}, false},
		{"two arguments before dash", []string{"sb", "/bin/true", "--", "x"}, Args{}, false},
		{"bad flag syntax", []string{"sb", "---env", "x"}, Args{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseArgs(tt.args)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q) = %+v, %v; want %+v, %v", tt.args, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// parsedSandbox is what a definition says, read back with the YAML library
// the supervisor uses.
type parsedSandbox struct {
	Command []string          `yaml:"command"`
	Env     map[string]string `yaml:"env"`
	Restart string            `yaml:"restart"`
	Policy  struct {
		Presets []string `yaml:"presets"`
	} `yaml:"policy"`
}

func readBack(t *testing.T, def []byte) map[string]parsedSandbox {
	t.Helper()
	var doc struct {
		Sandboxes map[string]parsedSandbox `yaml:"sandboxes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(def))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("definition does not parse: %v\n%s", err, def)
	}
	return doc.Sandboxes
}

func TestDefinition(t *testing.T) {
	tests := []struct {
		name    string
		sb      string
		command []string
		env     []string
		restart string
		presets []string
		wantErr string
	}{
		{"empty sandbox", "sb", nil, nil, "", nil, ""},
		{"quotes, backslashes and yaml syntax", "sb", []string{"/bin/sh", "-c", `echo "a: b" \ # c; [x], {y}: &z *w !t | > '`}, nil, "", nil, ""},
		{"line breaks, tabs and controls", "sb", []string{"/x", "a\nb\r\tc\x00\x1b[2J\x7f\u0085\u2028\u2029\ufeff"}, nil, "", nil, ""},
		{"leading and trailing spaces", "sb", []string{"/x", " a ", "  ", ""}, nil, "", nil, ""},
		{"long arguments are not folded", "sb", []string{"/x", strings.Repeat("word ", 100)}, nil, "", nil, ""},
		{"non-ASCII", "sb", []string{"/x", "héllo ✓ 𝄞"}, []string{"K=✓"}, "", nil, ""},
		{"env, restart and presets", "sb", nil, []string{"A=1", "B=x=y", "C=", "true=null"}, "on-failure", []string{"pypi", "npm"}, ""},
		{"env without value", "sb", nil, []string{"A"}, "", nil, "want KEY=VALUE"},
		{"env with empty key", "sb", nil, []string{"=1"}, "", nil, "want KEY=VALUE"},
		{"env twice", "sb", nil, []string{"A=1", "A=2"}, "", nil, "given twice"},
		{"invalid UTF-8", "sb", []string{"/x", "\xff"}, nil, "", nil, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, err := Definition(tt.sb, tt.command, tt.env, tt.restart, tt.presets)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkReadBack(t, def, tt.sb, tt.command, tt.env, tt.restart, tt.presets)
		})
	}
}

func checkReadBack(t *testing.T, def []byte, name string, command, env []string, restart string, presets []string) {
	t.Helper()
	got := readBack(t, def)
	sb, ok := got[name]
	if !ok || len(got) != 1 {
		t.Fatalf("sandboxes %v, want just %q\n%s", got, name, def)
	}
	var wantEnv map[string]string
	for _, kv := range env {
		if wantEnv == nil {
			wantEnv = map[string]string{}
		}
		k, v, _ := strings.Cut(kv, "=")
		wantEnv[k] = v
	}
	if !reflect.DeepEqual(sb.Command, command) || !reflect.DeepEqual(sb.Env, wantEnv) || sb.Restart != restart || !reflect.DeepEqual(sb.Policy.Presets, presets) {
		t.Errorf("read back %+v\nwant command %q env %q restart %q presets %q\n%s", sb, command, wantEnv, restart, presets, def)
	}
}

// TestDefinitionValidates checks that the supervisor's own parser takes a
// definition, with its rules and line numbers.
func TestDefinitionValidates(t *testing.T) {
	def, err := Definition("sb", []string{"/bin/sh", "-c", "exit 3"}, []string{"HOME=/sandbox"}, "never", []string{"pypi"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(def, "def")
	if err != nil {
		t.Fatalf("%v\n%s", err, def)
	}
	sb := cfg.Sandboxes["sb"]
	if !reflect.DeepEqual(sb.Command, []string{"/bin/sh", "-c", "exit 3"}) || sb.Env["HOME"] != "/sandbox" || sb.Restart != "never" || !reflect.DeepEqual(sb.Policy.Presets, []string{"pypi"}) {
		t.Errorf("parsed %+v", sb)
	}
	bad, _ := Definition("sb", []string{"agent"}, nil, "", nil)
	if _, err := config.Parse(bad, "def"); err == nil || !strings.Contains(err.Error(), "def:3: sandboxes.sb.command") {
		t.Errorf("relative command: %v", err)
	}
}

// FuzzDefinition checks that whatever the flags hold, the definition reads
// back as exactly those values (or is refused).
func FuzzDefinition(f *testing.F) {
	f.Add("sb", "/bin/sh", "-c \"x\"\n", "A=1", "always", "pypi")
	f.Add("a: b", "#", "\x00\u2028", "K=\\", "", "{x}")
	f.Add("<<", "*a", "&b !c", "<<=x", "~", "null")
	f.Fuzz(func(t *testing.T, name, c0, c1, env, restart, preset string) {
		command := []string{c0, c1}
		var presets []string
		if preset != "" {
			presets = []string{preset}
		}
		envs := []string{env}
		def, err := Definition(name, command, envs, restart, presets)
		if err != nil {
			return
		}
		checkReadBack(t, def, name, command, envs, restart, presets)
	})
}

// fakeSupervisor answers every request on a Unix socket with handler and
// records the requests' bodies.
func fakeSupervisor(t *testing.T, handler func(net.Conn, []byte)) (state string, bodies func() []string) {
	t.Helper()
	state = t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(state, ControlSocketName))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufioReader(c))
				if err != nil {
					return
				}
				b, _ := io.ReadAll(req.Body)
				if req.Method != "POST" || req.URL.Path != "/v1/sandboxes" {
					b = []byte("bad request line " + req.Method + " " + req.URL.Path)
				}
				mu.Lock()
				got = append(got, string(b))
				mu.Unlock()
				handler(c, b)
			}()
		}
	}()
	return state, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

func TestMainAnswers(t *testing.T) {
	raw := func(s string) func(net.Conn, []byte) {
		return func(c net.Conn, _ []byte) { io.WriteString(c, s) }
	}
	view := `{"name":"sb","netns":"/s/netns/sb","status":{"state":"running"}}`
	tests := []struct {
		name       string
		handler    func(net.Conn, []byte)
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"created, content length", raw("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(view)) + "\r\n\r\n" + view),
			0, "sandbox sb created (workspace STATE/sandboxes/sb/workspace)\n", ""},
		{"created, chunked after an interim answer", raw("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + view[:5] + "\r\n" + itoa16(len(view)-5) + "\r\n" + view[5:] + "\r\n0\r\n\r\n"),
			0, "sandbox sb created (workspace STATE/sandboxes/sb/workspace)\n", ""},
		{"created, body until close", raw("HTTP/1.1 201 Created\r\n\r\n" + view), 0, "sandbox sb created (workspace STATE/sandboxes/sb/workspace)\n", ""},
		{"name from the answer is escaped", raw("HTTP/1.1 201 Created\r\n\r\n{\"name\":\"s\\u001b[2J\"}"), 0, "sandbox s\\x1b[2J created (workspace STATE/sandboxes/s\\x1b[2J/workspace)\n", ""},
		{"validation errors, one per line, escaped", raw("HTTP/1.1 400 Bad Request\r\nContent-Length: 50\r\n\r\n{\"error\":\"sb:3: a\\nsb:4: b\\u001b\"}                 "),
			1, "", "clawcage: sb:3: a\nsb:4: b\\x1b\n"},
		{"conflict", raw("HTTP/1.1 409 Conflict\r\n\r\n{\"error\":\"sandbox sb already exists\"}\n"), 1, "", "clawcage: sandbox sb already exists\n"},
		{"error without JSON", raw("HTTP/1.1 502 Bad Gateway\r\n\r\noops"), 1, "", "clawcage: supervisor answered 502 Bad Gateway\n"},
		{"closed without an answer", raw(""), 1, "", "clawcage: ask the supervisor at STATE/control.sock (is `clawcage up` running?): Post \"http://clawcage/v1/sandboxes\": EOF\n"},
		{"malformed answer", raw("SMTP ready\r\n"), 1, "", "clawcage: ask the supervisor at STATE/control.sock (is `clawcage up` running?): Post \"http://clawcage/v1/sandboxes\": net/http: HTTP/1.x transport connection broken: malformed HTTP response \"SMTP ready\"\n"},
		{"truncated body", raw("HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"name\""), 1, "", "clawcage: read answer: unexpected EOF\n"},
		{"undecodable answer", raw("HTTP/1.1 201 Created\r\n\r\n[1]"), 1, "", "clawcage: decode answer: json: cannot unmarshal a non-object into a struct\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, bodies := fakeSupervisor(t, tt.handler)
			a := Args{Name: "sb", Command: []string{"/bin/true"}, Env: []string{"A=1"}, StateDir: state}
			var stdout, stderr bytes.Buffer
			code, done := Main(a, &stdout, &stderr)
			if !done || code != tt.wantCode {
				t.Errorf("Main = %d, %v; want %d, true", code, done, tt.wantCode)
			}
			if got, want := stdout.String(), strings.ReplaceAll(tt.wantStdout, "STATE", state); got != want {
				t.Errorf("stdout %q, want %q", got, want)
			}
			if got, want := stderr.String(), strings.ReplaceAll(tt.wantStderr, "STATE", state); got != want {
				t.Errorf("stderr %q, want %q", got, want)
			}
			def, _ := Definition("sb", []string{"/bin/true"}, []string{"A=1"}, "", nil)
			want := `{"name":"sb","definition":` + jsonString(string(def)) + `}`
			if b := bodies(); len(b) != 1 || b[0] != want {
				t.Errorf("requests %q, want one %q", b, want)
			}
		})
	}
}

// TestMainLeavesToCobra checks that nothing is sent, and the command is left
// to the cobra command, when the definition is wrong or no supervisor
// listens.
func TestMainLeavesToCobra(t *testing.T) {
	state, bodies := fakeSupervisor(t, func(net.Conn, []byte) {})
	for _, a := range []Args{
		{Name: "sb", Env: []string{"A"}, StateDir: state},
		{Name: "sb", Command: []string{"/x", "\xff"}, StateDir: state},
		{Name: "sb", StateDir: filepath.Join(state, "nothing-here")},
		{Name: "sb", StateDir: state + strings.Repeat("/x", 60)}, // path too long for a socket address
	} {
		var stdout, stderr bytes.Buffer
		if code, done := Main(a, &stdout, &stderr); done || stdout.Len() != 0 || stderr.Len() != 0 {
			t.Errorf("Main(%+v) = %d, %v, %q, %q; want it left to cobra", a, code, done, stdout.String(), stderr.String())
		}
	}
	if b := bodies(); len(b) != 0 {
		t.Errorf("requests sent: %q", b)
	}
}

// TestRoundTripDeadlineAndCancel checks that a supervisor that does not
// answer ends the exchange at the deadline or when cancelled, with the
// client's words.
func TestRoundTripDeadlineAndCancel(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	state, _ := fakeSupervisor(t, func(net.Conn, []byte) { <-hold })
	sock := filepath.Join(state, ControlSocketName)
	tests := []struct {
		name     string
		deadline time.Duration
		cancel   bool
		want     string
	}{
		{"deadline", 50 * time.Millisecond, false, `Post "http://clawcage/v1/sandboxes": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`},
		{"cancelled", time.Minute, true, `Post "http://clawcage/v1/sandboxes": context canceled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialUnix(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cancel := make(chan struct{})
			if tt.cancel {
				time.AfterFunc(50*time.Millisecond, func() { close(cancel) })
			}
			_, err = roundTrip(c, "POST", "/v1/sandboxes", []byte("{}"), time.Now().Add(tt.deadline), cancel)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzReadHead feeds arbitrary answers to the response parser: it must
// return an answer or an error, never hang or panic, and never read more
// than maxBody.
func FuzzReadHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n0\r\nT: v\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 404 Not Found\r\n\r\nx"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := newLineReader(bytes.NewReader(data))
		resp, chunked, length, err := readHead(br)
		if err != nil {
			return
		}
		var r io.Reader = br
		if chunked {
			r = &chunkedReader{r: br}
		} else if length >= 0 {
			r = io.LimitReader(br, length)
		}
		body, _ := io.ReadAll(io.LimitReader(r, maxBody))
		if resp.code < 100 || len(body) > len(data) {
			t.Errorf("code %d, body %d bytes from %d", resp.code, len(body), len(data))
		}
	})
}

// TestFastPathInitOrder builds clawcage and checks, with
// GODEBUG=inittrace=1, that `sandbox create` is done by this package's init
// before the packages it does not need are initialized (see the package
// comment). The runtime prints a package when its initialization is done,
// so the package that takes over is never printed. Start-up time itself is
// measured by bench/stack, never asserted.
func TestFastPathInitOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the clawcage binary")
	}
	bin := filepath.Join(t.TempDir(), "clawcage")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clawcage/clawcage/cmd/clawcage").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	view := `{"name":"sb"}`
	state, bodies := fakeSupervisor(t, func(c net.Conn, _ []byte) {
		io.WriteString(c, "HTTP/1.1 201 Created\r\nContent-Length: "+itoa(len(view))+"\r\n\r\n"+view)
	})
	cmd := exec.Command(bin, "sandbox", "create", "sb", "--state", state, "--", "/bin/true")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("clawcage sandbox create: %v\n%s", err, stderr.String())
	}
	if want := "sandbox sb created (workspace " + state + "/sandboxes/sb/workspace)\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	if len(bodies()) != 1 {
		t.Errorf("requests %q, want one", bodies())
	}
	const module = "github.com/clawcage/clawcage/"
	inited := map[string]bool{}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "init" {
			inited[f[1]] = true
		}
	}
	if !inited["os/signal"] || inited[module+"internal/stack/createcmd"] || inited[module+"cmd/clawcage"] {
		t.Fatalf("createcmd did not take over:\n%s", stderr.String())
	}
	for _, h := range []string{
		"net", "net/netip", "net/http", "go.yaml.in/yaml/v3", "github.com/spf13/cobra", "encoding/json", "log/slog",
		"crypto/internal/fips140", "crypto/sha256", "compress/flate", "log", "database/sql", "google.golang.org/protobuf/internal/detrand", "google.golang.org/protobuf/internal/filedesc",
		"github.com/prometheus/client_golang/prometheus", "modernc.org/libc", "modernc.org/sqlite",
		module + "internal/policy", module + "internal/config", module + "internal/stack", module + "internal/router",
		module + "internal/egress", module + "internal/supervisor",
	} {
		if inited[h] {
			t.Errorf("%s was initialized before createcmd took over (%d packages)", h, len(inited))
		}
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// FuzzJSONString keeps appendJSONString equal to json.Marshal of a string.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"plain", "\"\\/<>&", "\x00\x01\b\f\n\r\t\x1f\x7f", "\xff\xc3", "\u2028\u2029\ufeff", "𝄞 ✓"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, json.Marshal %s", s, got, want)
		}
	})
}

// FuzzStringField keeps stringField equal to json.Unmarshal into a struct
// with one string field: the same value, and an error for the same inputs.
func FuzzStringField(f *testing.F) {
	for _, s := range []string{`{"name":"sb","status":{"state":"running","n":[1,2.5e3,-0,true,null]}}`, `{"NAME":"a","name":"b"}`,
		`{"error":"x\u001b\ud834\udd1e\ud800\n"}`, `null`, ` {} `, `[1]`, `"s"`, `{"name":1}`, `{"name":null}`, `{"name":"a"} x`,
		`{"name":"\u00zz"}`, `{"a":01}`, `{"a":1.}`, `{"a":tru}`, "{\"name\":\"\xff\"}", `{"a":[}`, `{,}`, `{"a" 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, field := range []string{"name", "error"} {
			var want string
			var jerr error
			if field == "name" {
				var v struct {
					Name string `json:"name"`
				}
				jerr = json.Unmarshal(data, &v)
				want = v.Name
			} else {
				var v struct {
					Error string `json:"error"`
				}
				jerr = json.Unmarshal(data, &v)
				want = v.Error
			}
			got, err := stringField(data, field)
			if (err == nil) != (jerr == nil) || (err == nil && got != want) {
				t.Errorf("stringField(%q, %s) = %q, %v; json.Unmarshal %q, %v", data, field, got, err, want, jerr)
			}
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

func itoa16(n int) string { return strconv.FormatInt(int64(n), 16) }

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }
