package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

const full = `version: 1
presets: [telegram, pypi]
network:
  - {name: github-read, hosts: [API.GitHub.com.], ports: [443], methods: [GET]}
  - {name: office-db, cidrs: [10.0.5.0/24], ports: [5432]}
  - name: intl
    hosts: ["*.bücher.example", plain.example]
    paths: ["/v1/**"]
filesystem: {read_only: [/opt/tools], read_write: [/srv/data]}
resources: {memory: 1GiB, pids: 256, cpu: 1.5, disk: 5G, tmp: 512MiB}
local_ports: [8000, 3000]
provider_tools: [web_search]
`

func TestParseFull(t *testing.T) {
	p, err := Parse([]byte(full), "policy.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Policy{
		Version: 1,
		Presets: []string{"telegram", "pypi"},
		Network: []Rule{
			{Name: "github-read", Hosts: []string{"api.github.com"}, Ports: []int{443}, Methods: []string{"GET"}},
			{Name: "office-db", CIDRs: []string{"10.0.5.0/24"}, Ports: []int{5432}},
			{Name: "intl", Hosts: []string{"*.xn--bcher-kva.example", "plain.example"}, Paths: []string{"/v1/**"}},
		},
		Filesystem:    Filesystem{ReadOnly: []string{"/opt/tools"}, ReadWrite: []string{"/srv/data"}},
		Resources:     Resources{Memory: 1 << 30, Pids: 256, CPU: 1.5, Disk: 5e9, Tmp: 512 << 20},
		LocalPorts:    []int{8000, 3000},
		ProviderTools: []string{"web_search"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Parse =\n%+v\nwant\n%+v", p, want)
	}
	if !p.AllowsProviderTool("web_search") || p.AllowsProviderTool("web_fetch") {
		t.Fatalf("AllowsProviderTool wrong for %v", p.ProviderTools)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "# nothing\n", "~\n", "{}\n", "version: 0\n", "network: []\n"} {
		p, err := Parse([]byte(in), "p.yaml")
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if p.Version != Version || len(p.Network) != 0 || len(p.Presets) != 0 {
			t.Fatalf("Parse(%q) = %+v; want empty version-1 policy", in, p)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"port too big", "network:\n  - name: r\n    hosts: [a.example.com]\n    ports: [443, 70000]\n",
			"p.yaml:4: network[0].ports[1]: 70000 is not a port"},
		{"port zero on its own line", "network:\n  - name: r\n    hosts: [a.example.com]\n    ports:\n      - 0\n",
			"p.yaml:5: network[0].ports[0]: 0 is not a port"},
		{"negative port", "network:\n  - {name: r, hosts: [a.example.com], ports: [-1]}\n",
			"p.yaml:2: network[0].ports[0]: -1 is not a port"},
		{"port as string", "network:\n  - {name: r, hosts: [a.example.com], ports: [\"https\"]}\n",
			`p.yaml:2: network[0].ports[0]: want a decimal integer, not "https"`},
		{"octal-looking port", "network:\n  - {name: r, hosts: [a.example.com], ports: [0443]}\n",
			`p.yaml:2: network[0].ports[0]: want a decimal integer, not "0443"`},
		{"duplicate port", "network:\n  - {name: r, hosts: [a.example.com], ports: [443, 443]}\n",
			"p.yaml:2: network[0].ports[1]: port 443 is listed twice"},
		{"unknown top-level field", "netwrok: []\n",
			`p.yaml:1: unknown field "netwrok" (want version, presets, network, filesystem, resources, local_ports, provider_tools)`},
		{"unknown rule field", "network:\n  - name: r\n    host: [a.example.com]\n",
			`p.yaml:3: network[0]: unknown field "host" (want name, hosts, cidrs, ports, methods, paths)`},
		{"duplicate key", "network:\n  - name: r\n    hosts: [a.example.com]\n    hosts: [b.example.com]\n",
			`p.yaml:4: network[0]: duplicate field "hosts" (first at line 3)`},
		{"duplicate top-level key", "presets: [github]\npresets: [pypi]\n",
			`p.yaml:2: duplicate field "presets" (first at line 1)`},
		{"duplicate rule name", "network:\n  - {name: r, hosts: [a.example.com]}\n  - {name: r, hosts: [b.example.com]}\n",
			`p.yaml:3: network[1].name: duplicate rule name "r" (first at line 2)`},
		{"missing name", "network:\n  - hosts: [a.example.com]\n",
			"p.yaml:2: network[0].name: missing: every rule needs a name"},
		{"bad rule name", "network:\n  - {name: My Rule, hosts: [a.example.com]}\n",
			`p.yaml:2: network[0].name: "My Rule" is not a rule name (lower-case letters, digits, '.', '_', '-'; at most 63)`},
		{"preset-style rule name", "network:\n  - {name: github/api, hosts: [a.example.com]}\n",
			`p.yaml:2: network[0].name: "github/api" is not a rule name (lower-case letters, digits, '.', '_', '-'; at most 63)`},
		{"no hosts nor cidrs", "network:\n  - {name: r, ports: [80]}\n",
			"p.yaml:2: network[0]: a rule needs hosts or cidrs"},
		{"ip literal in hosts", "network:\n  - {name: r, hosts: [10.0.0.1]}\n",
			`p.yaml:2: network[0].hosts[0]: "10.0.0.1" is an IP address: list it under cidrs as 10.0.0.1/32`},
		{"ipv6 literal in hosts", "network:\n  - {name: r, hosts: [\"[::1]\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "[::1]" is an IP address: list it under cidrs as ::1/128`},
		{"decimal ip trick in hosts", "network:\n  - {name: r, hosts: [\"2130706433\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "2130706433" is a numeric host that is not a canonical dotted-quad IPv4 address`},
		{"short ip trick in hosts", "network:\n  - {name: r, hosts: [127.1]}\n",
			`p.yaml:2: network[0].hosts[0]: want a string, not "127.1"`},
		{"quoted short ip trick in hosts", "network:\n  - {name: r, hosts: [\"127.1\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "127.1" is a numeric host that is not a canonical dotted-quad IPv4 address`},
		{"hex ip trick in hosts", "network:\n  - {name: r, hosts: [0x7f.1]}\n",
			`p.yaml:2: network[0].hosts[0]: "0x7f.1" is a numeric host that is not a canonical dotted-quad IPv4 address`},
		{"wildcard in the middle", "network:\n  - {name: r, hosts: [\"a.*.example.com\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "a.*.example.com": a wildcard is allowed only as a leading "*."`},
		{"partial label wildcard", "network:\n  - {name: r, hosts: [\"*example.com\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "*example.com": a wildcard is allowed only as a leading "*."`},
		{"double wildcard", "network:\n  - {name: r, hosts: [\"*.*.example.com\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "*.*.example.com": a wildcard is allowed only as a leading "*."`},
		{"bare star", "network:\n  - {name: r, hosts: [\"*\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "*": a wildcard is allowed only as a leading "*."`},
		{"wildcard tld", "network:\n  - {name: r, hosts: [\"*.com\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "*.com" is too broad: a wildcard needs at least two labels after "*."`},
		{"host with port", "network:\n  - {name: r, hosts: [\"a.example.com:443\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "a.example.com:443": a host takes no port; list ports under ports`},
		{"host with space", "network:\n  - {name: r, hosts: [\"a .example.com\"]}\n",
			`p.yaml:2: network[0].hosts[0]: "a .example.com" is not a valid host name: host "a .example.com" contains ' '`},
		{"duplicate host after normalisation", "network:\n  - {name: r, hosts: [a.example.com, A.Example.com.]}\n",
			`p.yaml:2: network[0].hosts[1]: "A.Example.com." is the same host as "a.example.com" listed before`},
		{"bad cidr", "network:\n  - {name: r, cidrs: [10.0.0.0/33]}\n",
			`p.yaml:2: network[0].cidrs[0]: "10.0.0.0/33" is not a CIDR range such as 10.0.5.0/24 or 2001:db8::/48`},
		{"cidr host bits", "network:\n  - {name: r, cidrs: [10.0.5.1/24]}\n",
			`p.yaml:2: network[0].cidrs[0]: "10.0.5.1/24" has bits set beyond the prefix length (did you mean 10.0.5.0/24?)`},
		{"cidr without length", "network:\n  - {name: r, cidrs: [10.0.5.1]}\n",
			`p.yaml:2: network[0].cidrs[0]: "10.0.5.1" has no prefix length (for one address write 10.0.5.1/32)`},
		{"cidr mapped form", "network:\n  - {name: r, cidrs: [\"::ffff:10.0.0.0/104\"]}\n",
			`p.yaml:2: network[0].cidrs[0]: "::ffff:10.0.0.0/104": write IPv4 ranges in IPv4 form`},
		{"cidr zone", "network:\n  - {name: r, cidrs: [\"fe80::%eth0/64\"]}\n",
			`p.yaml:2: network[0].cidrs[0]: "fe80::%eth0/64": zones are not allowed in cidrs`},
		{"lower-case method", "network:\n  - {name: r, hosts: [a.example.com], methods: [get]}\n",
			`p.yaml:2: network[0].methods[0]: "get" is not an HTTP method (want one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)`},
		{"connect method", "network:\n  - {name: r, hosts: [a.example.com], methods: [CONNECT]}\n",
			`p.yaml:2: network[0].methods[0]: "CONNECT" cannot be listed: a rule without methods and paths allows tunnels`},
		{"relative path glob", "network:\n  - {name: r, hosts: [a.example.com], paths: [v1/*]}\n",
			`p.yaml:2: network[0].paths[0]: "v1/*" must start with /`},
		{"dot-dot path glob", "network:\n  - {name: r, hosts: [a.example.com], paths: [/v1/../admin]}\n",
			"p.yaml:2: network[0].paths[0]: path globs may not contain . or .. segments"},
		{"unknown preset", "presets: [github, gitlab]\n",
			`p.yaml:1: presets[1]: unknown preset "gitlab" (want one of apt, discord, dockerhub, github, go, huggingface, npm, pypi, slack, telegram)`},
		{"duplicate preset", "presets: [github, github]\n",
			`p.yaml:1: presets[1]: "github" is listed twice (first at line 1)`},
		{"version 2", "version: 2\n",
			"p.yaml:1: version: 2 is not supported (this build reads version 1)"},
		{"version string", "version: one\n",
			`p.yaml:1: version: want a decimal integer, not "one"`},
		{"relative fs path", "filesystem:\n  read_only: [opt/tools]\n",
			`p.yaml:2: filesystem.read_only[0]: "opt/tools" is not an absolute path`},
		{"unclean fs path", "filesystem:\n  read_write: [/srv/../etc]\n",
			`p.yaml:2: filesystem.read_write[0]: "/srv/../etc" is not a clean path (want "/etc")`},
		{"fs root", "filesystem:\n  read_write: [/]\n",
			`p.yaml:2: filesystem.read_write[0]: "/" would expose the whole host filesystem`},
		{"fs path in both lists", "filesystem:\n  read_only: [/opt]\n  read_write: [/opt]\n",
			`p.yaml:3: filesystem.read_write[0]: "/opt" is already listed under filesystem.read_only`},
		{"unknown fs field", "filesystem:\n  hidden: [/opt]\n",
			`p.yaml:2: filesystem: unknown field "hidden" (want read_only, read_write)`},
		{"negative memory", "resources:\n  memory: -1GiB\n",
			`p.yaml:2: resources.memory: size "-1GiB" is negative`},
		{"bad memory unit", "resources:\n  memory: 1GB2\n",
			`p.yaml:2: resources.memory: "1GB2" is not a size (want e.g. 512MiB, 1GiB, 1G or a number of bytes)`},
		{"memory overflow", "resources:\n  memory: 9999999999TiB\n",
			`p.yaml:2: resources.memory: size "9999999999TiB" is too large`},
		{"negative pids", "resources:\n  pids: -5\n",
			"p.yaml:2: resources.pids: -5 is not a task count"},
		{"negative cpu", "resources:\n  cpu: -0.5\n",
			"p.yaml:2: resources.cpu: -0.5 is not a CPU count"},
		{"nan cpu", "resources:\n  cpu: .nan\n",
			`p.yaml:2: resources.cpu: want a number of CPUs such as 1 or 0.5, not ".nan"`},
		{"too many cpus", "resources:\n  cpu: 1e9\n",
			"p.yaml:2: resources.cpu: 1e9 is not a CPU count"},
		{"cpu string", "resources:\n  cpu: lots\n",
			`p.yaml:2: resources.cpu: want a number of CPUs such as 1 or 0.5, not "lots"`},
		{"unknown provider tool", "provider_tools: [web_search, browse]\n",
			`p.yaml:1: provider_tools[1]: unknown provider tool "browse" (want one of web_search, web_fetch, code_execution, mcp, code_interpreter, file_search, image_generation, computer_use)`},
		{"local port too big", "local_ports: [8000, 65536]\n",
			"p.yaml:1: local_ports[1]: 65536 is not a port"},
		{"local port twice", "local_ports:\n  - 8000\n  - 8000\n",
			"p.yaml:3: local_ports[1]: port 8000 is listed twice"},
		{"network not a list", "network: {name: r}\n",
			"p.yaml:1: network: want a list, not a mapping"},
		{"rule not a mapping", "network:\n  - a.example.com\n",
			`p.yaml:2: network[0]: want a mapping, not "a.example.com"`},
		{"policy not a mapping", "- a\n",
			"p.yaml:1: want a mapping, not a list"},
		{"restriction voided by broader rule", "network:\n  - {name: all, hosts: [\"*.github.com\"]}\n  - {name: read, hosts: [api.github.com], methods: [GET]}\n",
			`p.yaml:3: network[1]: restricts methods or paths for api.github.com port 443, but rule "all" allows every request there, so the restriction has no effect`},
		{"cidr restriction voided", "network:\n  - {name: lan, cidrs: [10.0.0.0/8], ports: [80]}\n  - {name: api, cidrs: [10.0.5.0/24], ports: [80, 8080], paths: [/api/*]}\n",
			`p.yaml:3: network[1]: restricts methods or paths for 10.0.5.0/24 port 80, but rule "lan" allows every request there, so the restriction has no effect`},
		{"public cidr restriction voided by 0.0.0.0/0", "network:\n  - {name: all, cidrs: [0.0.0.0/0]}\n  - {name: dns, cidrs: [8.8.8.0/24], methods: [GET]}\n",
			`p.yaml:3: network[1]: restricts methods or paths for 8.8.8.0/24 port 443, but rule "all" allows every request there, so the restriction has no effect`},
		{"self-referencing alias", "network: &n\n  - *n\n",
			"p.yaml:1: network[0]: want a mapping, not a list"},
		{"merge key", "network:\n  - <<: {name: r}\n    hosts: [a.example.com]\n",
			`p.yaml:2: network[0]: unknown field "<<" (want name, hosts, cidrs, ports, methods, paths)`},
		{"two errors both reported", "network:\n  - {name: r, hosts: [a.example.com], ports: [0]}\nresources: {pids: -1}\n",
			"p.yaml:2: network[0].ports[0]: 0 is not a port\np.yaml:3: resources.pids: -1 is not a task count"},
		{"not yaml", "network: [\n", "p.yaml:1: did not find expected node content"},
		{"two documents", "network: []\n---\npresets: []\n", "p.yaml:2: a policy file holds one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "p.yaml")
			if err == nil {
				t.Fatalf("Parse accepted it: %+v\nwant error %q", p, tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("error =\n%s\nwant\n%s", err, tt.want)
			}
		})
	}
}

func TestParseNoContradiction(t *testing.T) {
	// Different ports, or a restriction on a host the broad rule doesn't cover, are fine.
	for _, in := range []string{
		"network:\n  - {name: all, hosts: [\"*.github.com\"], ports: [443]}\n  - {name: read, hosts: [api.github.com], ports: [80], methods: [GET]}\n",
		"network:\n  - {name: all, hosts: [\"*.github.com\"]}\n  - {name: read, hosts: [github.com], methods: [GET]}\n",
		"network:\n  - {name: a, hosts: [a.example.com], methods: [GET]}\n  - {name: b, hosts: [a.example.com], methods: [POST]}\n",
		"network:\n  - {name: a, hosts: [a.example.com]}\n  - {name: b, hosts: [a.example.com]}\n",
		// 0.0.0.0/0 does not reach special-purpose addresses, so it does not void a restriction on them.
		"network:\n  - {name: all, cidrs: [0.0.0.0/0], ports: [80]}\n  - {name: imds, cidrs: [169.254.169.254/32], ports: [80], methods: [GET]}\n",
	} {
		if _, err := Parse([]byte(in), "p.yaml"); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

func TestDecodeNodeEmbedded(t *testing.T) {
	cfg := "sandboxes:\n  a:\n    command: [/bin/true]\n    policy:\n      network:\n        - {name: r, hosts: [x.example.com], ports: [70000]}\n"
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	node := doc.Content[0].Content[1].Content[1].Content[3] // sandboxes.a.policy
	_, err := DecodeNode(node, "clawcage.yaml")
	want := "clawcage.yaml:6: network[0].ports[0]: 70000 is not a port"
	if err == nil || err.Error() != want {
		t.Fatalf("DecodeNode error = %v; want %q", err, want)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 6 || pe.Field != "network[0].ports[0]" {
		t.Fatalf("error is not a *policy.Error with line 6: %#v", err)
	}
	var null yaml.Node
	if err := yaml.Unmarshal([]byte("policy: ~\n"), &null); err != nil {
		t.Fatal(err)
	}
	p, err := DecodeNode(null.Content[0].Content[1], "c.yaml")
	if err != nil || len(p.Network) != 0 || p.Version != Version {
		t.Fatalf("DecodeNode(null) = %+v, %v; want empty policy", p, err)
	}
}

func TestAliasesResolved(t *testing.T) {
	in := "network:\n  - name: a\n    hosts: &h [a.example.com]\n  - name: b\n    hosts: *h\n    ports: [8443]\n"
	p, err := Parse([]byte(in), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Network[1].Hosts; !reflect.DeepEqual(got, []string{"a.example.com"}) {
		t.Fatalf("aliased hosts = %v", got)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("network:\n  - {name: r, hosts: [a.example.com], ports: [99999]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ":2: network[0].ports[0]: 99999 is not a port"; err == nil || err.Error() != want {
		t.Fatalf("Load error = %v; want %q", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		str     string
		wantErr bool
	}{
		{"512MiB", 512 << 20, "512MiB", false},
		{"1GiB", 1 << 30, "1GiB", false},
		{"1Gi", 1 << 30, "1GiB", false},
		{"1G", 1e9, "1G", false},
		{"1GB", 1e9, "1G", false},
		{"100M", 100e6, "100M", false},
		{"4096", 4096, "4KiB", false},
		{"1000", 1000, "1K", false},
		{"1234", 1234, "1234", false},
		{"2TiB", 2 << 40, "2TiB", false},
		{"0", 0, "0", false},
		{"10B", 10, "10", false},
		{"", 0, "", true},
		{"GiB", 0, "", true},
		{"1.5GiB", 0, "", true},
		{"-1", 0, "", true},
		{"1gib", 0, "", true},
		{" 1GiB", 0, "", true},
		{"8388608TiB", 0, "", true},
		{"9223372036854775807", 9223372036854775807, "9223372036854775807", false},
		{"9223372036854775808", 0, "", true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseByteSize(%q) = %d; want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want || got.String() != tt.str {
			t.Errorf("ParseByteSize(%q) = %d (%s), %v; want %d (%s)", tt.in, got, got, err, tt.want, tt.str)
		}
		// UnmarshalYAML, as internal/config and others decode it.
		var r struct {
			M ByteSize `yaml:"m"`
		}
		if err := yaml.Unmarshal([]byte("m: "+tt.in+"\n"), &r); err != nil || r.M != tt.want {
			t.Errorf("yaml m: %s = %d, %v; want %d", tt.in, r.M, err, tt.want)
		}
	}
	var r struct {
		M ByteSize `yaml:"m"`
	}
	if err := yaml.Unmarshal([]byte("m: [1]\n"), &r); err == nil {
		t.Error("yaml accepted a list as a size")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("network:\n  - {name: r, hosts: [\"*.example.com\"], ports: [80, 443], methods: [GET], paths: [\"/a/**\"]}\n"))
	f.Add([]byte("network:\n  - {name: r, cidrs: [10.0.0.0/8, \"2001:db8::/32\"]}\n"))
	f.Add([]byte("version: 1\nresources: {memory: 1G, cpu: 0.5}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("network: [{name: x, hosts: [\"0x7f.1\", \"bücher.example\"]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "f.yaml")
		if err != nil {
			return
		}
		// Anything Parse accepts must compile (presets may lack params).
		if _, err := NewMatcher(p.Network); err != nil {
			t.Fatalf("accepted policy does not compile: %v\n%s", err, data)
		}
		// Parsing its own normalised rules again accepts the same thing.
		out, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		p2, err := Parse(out, "again.yaml")
		if err != nil {
			t.Fatalf("re-parse of\n%s\nfailed: %v", out, err)
		}
		if !reflect.DeepEqual(p.Network, p2.Network) && len(p.Network) > 0 {
			t.Fatalf("re-parse changed rules:\n%+v\n%+v", p.Network, p2.Network)
		}
	})
}
