package policy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Parameters use made-up hosts: real registry host names are never written
// into this repository.
var testParams = map[string]string{
	"npm.registry": "https://registry.example.test/",
	"go.proxy":     "https://proxy.example.test,https://mirror.example.test:8443|direct",
	"go.sumdb":     "sumdb.example.test+abcdef+AbCd",
	"apt.sources":  "http://deb.example.test/debian https://secure.example.test/debian-security http://10.0.0.9:3142/debian",
}

func TestEveryPresetCompiles(t *testing.T) {
	infos := Presets()
	var names []string
	for _, p := range infos {
		names = append(names, p.Name)
		if p.Description == "" || len(p.Rules) == 0 {
			t.Errorf("preset %s: empty description or rules", p.Name)
		}
		pol := &Policy{Presets: []string{p.Name}}
		m, err := pol.Compile(CompileOptions{PresetParams: testParams})
		if err != nil {
			t.Errorf("preset %s: %v", p.Name, err)
			continue
		}
		for _, r := range m.Rules() {
			if !strings.HasPrefix(r.Name, p.Name+"/") {
				t.Errorf("preset %s: rule %q not namespaced", p.Name, r.Name)
			}
		}
	}
	want := []string{"apt", "discord", "dockerhub", "github", "go", "huggingface", "npm", "pypi", "slack", "telegram"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("Presets() = %v; want %v", names, want)
	}
}

func TestPresetHosts(t *testing.T) {
	m := mustMatcher(t, "presets: [telegram, discord, slack, github, pypi, dockerhub, huggingface]\n")
	for _, h := range []string{
		"api.telegram.org", "discord.com", "gateway.discord.gg", "gateway-us-east1-b.discord.gg", "cdn.discordapp.com",
		"slack.com", "wss-primary.slack.com", "github.com", "api.github.com", "raw.githubusercontent.com",
		"pypi.org", "files.pythonhosted.org", "registry-1.docker.io", "auth.docker.io", "huggingface.co", "cdn-lfs.hf.co",
	} {
		if d := m.DecideName(h, 443, "", ""); !d.Allow {
			t.Errorf("%s denied: %+v", h, d)
		}
	}
	for _, h := range []string{"telegram.org", "evil-github.com", "github.com.evil.example", "slack.com.evil.example"} {
		if d := m.DecideName(h, 443, "", ""); d.Allow {
			t.Errorf("%s allowed by %s", h, d.Rule)
		}
	}
}

func TestExpandPresetParams(t *testing.T) {
	tests := []struct {
		name   string
		preset string
		params map[string]string
		want   []Rule
		err    string
	}{
		{"npm registry url", "npm", map[string]string{"npm.registry": "https://registry.example.test/"},
			[]Rule{{Name: "npm/registry", Hosts: []string{"registry.example.test"}, Ports: []int{443}}}, ""},
		{"npm registry on a lan address", "npm", map[string]string{"npm.registry": "http://10.1.2.3:4873/"},
			[]Rule{{Name: "npm/registry", CIDRs: []string{"10.1.2.3/32"}, Ports: []int{4873}}}, ""},
		{"go proxy list with two ports and direct", "go", map[string]string{"go.proxy": testParams["go.proxy"]},
			[]Rule{
				{Name: "go/proxy-443", Hosts: []string{"proxy.example.test"}, Ports: []int{443}},
				{Name: "go/proxy-8443", Hosts: []string{"mirror.example.test"}, Ports: []int{8443}},
			}, ""},
		{"go proxy and sumdb name", "go", map[string]string{"go.proxy": "https://proxy.example.test", "go.sumdb": "sumdb.example.test+key"},
			[]Rule{
				{Name: "go/proxy", Hosts: []string{"proxy.example.test"}, Ports: []int{443}},
				{Name: "go/sumdb", Hosts: []string{"sumdb.example.test"}, Ports: []int{443}},
			}, ""},
		{"go sumdb with url", "go", map[string]string{"go.proxy": "https://proxy.example.test", "go.sumdb": "sum.example.test+key https://sumproxy.example.test:444/x"},
			[]Rule{
				{Name: "go/proxy", Hosts: []string{"proxy.example.test"}, Ports: []int{443}},
				{Name: "go/sumdb", Hosts: []string{"sumproxy.example.test"}, Ports: []int{444}},
			}, ""},
		{"go sumdb off", "go", map[string]string{"go.proxy": "https://proxy.example.test", "go.sumdb": "off"},
			[]Rule{{Name: "go/proxy", Hosts: []string{"proxy.example.test"}, Ports: []int{443}}}, ""},
		{"go file proxy skipped", "go", map[string]string{"go.proxy": "file:///srv/mods,https://proxy.example.test"},
			[]Rule{{Name: "go/proxy", Hosts: []string{"proxy.example.test"}, Ports: []int{443}}}, ""},
		{"apt sources", "apt", map[string]string{"apt.sources": testParams["apt.sources"]},
			[]Rule{
				{Name: "apt/mirrors-80", Hosts: []string{"deb.example.test"}, Ports: []int{80}},
				{Name: "apt/mirrors-443", Hosts: []string{"secure.example.test"}, Ports: []int{443}},
				{Name: "apt/mirrors-3142", CIDRs: []string{"10.0.0.9/32"}, Ports: []int{3142}},
			}, ""},
		{"missing parameter", "npm", nil, nil,
			"preset \"npm\" needs parameter \"npm.registry\" (URL of the npm registry; found by `npm config get registry`)"},
		{"go direct only", "go", map[string]string{"go.proxy": "direct"}, nil,
			`preset "go": parameter go.proxy="direct" names no http(s) server to allow`},
		{"not a url", "npm", map[string]string{"npm.registry": "registry.example.test"}, nil,
			`preset "npm": parameter npm.registry: "registry.example.test" is not an http(s) URL`},
		{"numeric trick host", "npm", map[string]string{"npm.registry": "http://2130706433/"}, nil,
			`preset "npm": parameter npm.registry: "http://2130706433/": "2130706433" is a numeric host that is not a canonical dotted-quad IPv4 address`},
		{"unknown preset", "gitlab", nil, nil, `unknown preset "gitlab" (want one of apt, discord, dockerhub, github, go, huggingface, npm, pypi, slack, telegram)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExpandPreset(tt.preset, tt.params)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("ExpandPreset error = %v; want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ExpandPreset =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestCompileMissingPresetParam(t *testing.T) {
	p, err := Parse([]byte("presets: [npm, go]\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Compile(CompileOptions{})
	if err == nil || !strings.Contains(err.Error(), `preset "npm" needs parameter "npm.registry"`) || !strings.Contains(err.Error(), `preset "go" needs parameter "go.proxy"`) {
		t.Fatalf("Compile error = %v", err)
	}
	m, err := p.Compile(CompileOptions{PresetParams: testParams})
	if err != nil {
		t.Fatal(err)
	}
	if d := m.DecideName("registry.example.test", 443, "", ""); !d.Allow || d.Rule != "npm/registry" {
		t.Fatalf("npm registry: %+v", d)
	}
	if d := m.DecideName("mirror.example.test", 8443, "", ""); !d.Allow || d.Rule != "go/proxy-8443" {
		t.Fatalf("go mirror: %+v", d)
	}
}

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list", `# comment
deb http://deb.example.test/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://secure.example.test/debian-security bookworm-security main # trailing
deb-src http://deb.example.test/debian bookworm main
deb cdrom:[Debian]/ bookworm main
#deb http://disabled.example.test/debian bookworm main
`)
	write("sources.list.d/extra.list", "deb [ arch=amd64 ] http://extra.example.test:8080/repo stable main\n")
	write("sources.list.d/modern.sources", `Types: deb
URIs: http://deb822.example.test/debian
 http://second.example.test/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example.test/debian
Suites: bookworm
Enabled: no

# a comment stanza
Types: deb
URIs: file:/srv/local
Suites: ./
`)
	write("sources.list.d/ignored.txt", "deb http://ignored.example.test/ x main\n")
	var calls []string
	run := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, name+" "+strings.Join(args, " "))
		if _, ok := ctx.Deadline(); !ok {
			t.Error("command run without a deadline")
		}
		switch name {
		case "npm":
			return []byte("https://registry.example.test/\n"), nil
		case "go":
			return []byte("https://proxy.example.test,direct\nsumdb.example.test\n"), nil
		}
		return nil, exec.ErrNotFound
	}
	got, err := Discovery{Run: run, AptDir: dir}.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"npm.registry": "https://registry.example.test/",
		"go.proxy":     "https://proxy.example.test,direct",
		"go.sumdb":     "sumdb.example.test",
		"apt.sources":  "http://deb.example.test/debian http://deb822.example.test/debian http://extra.example.test:8080/repo http://second.example.test/debian https://secure.example.test/debian-security",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Discover =\n%v\nwant\n%v", got, want)
	}
	if want := []string{"npm config get registry", "go env GOPROXY GOSUMDB"}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("commands = %q; want %q", calls, want)
	}
	// The discovered parameters compile the three presets.
	p := &Policy{Presets: []string{"npm", "go", "apt"}}
	if _, err := p.Compile(CompileOptions{PresetParams: got}); err != nil {
		t.Fatalf("Compile with discovered params: %v", err)
	}
}

func TestDiscoverClientsMissingOrFailing(t *testing.T) {
	run := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if name == "npm" {
			return nil, exec.ErrNotFound
		}
		return nil, errors.New("exit status 1: go: broken")
	}
	got, err := Discovery{Run: run, AptDir: t.TempDir()}.Discover(context.Background())
	if len(got) != 0 {
		t.Fatalf("Discover = %v; want nothing", got)
	}
	if err == nil || err.Error() != "go env GOPROXY GOSUMDB: exit status 1: go: broken" {
		t.Fatalf("Discover error = %v", err)
	}
	// An empty GOPROXY line must not shift GOSUMDB into go.proxy.
	run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if name == "go" {
			return []byte("\nsumdb.example.test\n"), nil
		}
		return nil, exec.ErrNotFound
	}
	got, err = Discovery{Run: run, AptDir: t.TempDir()}.Discover(context.Background())
	if err != nil || got["go.proxy"] != "" || got["go.sumdb"] != "sumdb.example.test" {
		t.Fatalf("Discover with empty GOPROXY = %v, %v", got, err)
	}
	// npm prints "undefined" when nothing is configured.
	run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return []byte("undefined\n"), nil
	}
	got, _ = Discovery{Run: run, AptDir: t.TempDir()}.Discover(context.Background())
	if _, ok := got["npm.registry"]; ok {
		t.Fatalf("npm.registry = %q from undefined", got["npm.registry"])
	}
}

// TestEmbeddedPresetsParse parses every embedded preset file (presets are
// parsed on first use, not at package initialization, so this is where a
// bad one fails) and checks each one became a preset with rules.
func TestEmbeddedPresetsParse(t *testing.T) {
	entries, err := presetFS.ReadDir("presets")
	if err != nil {
		t.Fatal(err)
	}
	got := mustLoadPresets() // panics on a bad file, failing the test
	if len(got) != len(entries) || len(entries) == 0 {
		t.Fatalf("%d presets from %d embedded files", len(got), len(entries))
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		p, ok := got[name]
		if !ok || p.Description == "" || len(p.Rules) == 0 {
			t.Errorf("preset %s: %+v, %v; want a description and rules", name, p, ok)
		}
	}
	if _, err := parsePreset("bad", []byte("description: x\nnetwork: []\n")); err == nil {
		t.Error("a preset without rules parsed")
	}
}
