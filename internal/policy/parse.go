package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/hostport"
)

// Error is one problem found in a policy, located by file, line and field.
type Error struct {
	Source string // file name or other label given to Parse
	Line   int    // 1-based; 0 when unknown
	Field  string // e.g. "network[0].ports[1]"; empty for the whole policy
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(data, path)
}

// Parse parses and validates a policy document; source names it in errors
// ("policy.yaml:12: network[0].ports[1]: 70000 is not a port"). Host names
// are returned normalised (lower case, punycode, no trailing dot).
func Parse(data []byte, source string) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Policy{Version: Version}, nil
		}
		return nil, yamlError(source, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Source: source, Line: extra.Line, Msg: "a policy file holds one YAML document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(source, err)
	}
	return DecodeNode(&doc, source)
}

// DecodeNode decodes and validates a policy from a YAML node, such as
// sandboxes.NAME.policy in clawcage.yaml; errors carry the node's lines in
// source. A null or empty node is the empty policy (everything denied).
func DecodeNode(n *yaml.Node, source string) (*Policy, error) {
	d := &decoder{source: source}
	p := d.policy(n)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return p, nil
}

// yamlLine matches the "line N: " prefix yaml.v3 puts on its messages.
var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:yaml: )?line (\d+): `) })

func yamlError(source string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Source: source, Line: line, Msg: msg[len(m[0]):]}
	}
	return &Error{Source: source, Msg: msg}
}

// decoder walks yaml nodes by hand: yaml.v3's Node.Decode cannot reject
// unknown fields, and duplicate keys and line numbers must be reported.
type decoder struct {
	source string
	errs   []error
	// lines of each decoded rule, for contradiction errors.
	ruleLines []int
}

func (d *decoder) errf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{Source: d.source, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func join(field, sub string) string {
	if field == "" {
		return sub
	}
	return field + "." + sub
}

func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// mapping calls fn for each key of a mapping node, rejecting unknown and
// duplicate keys; it returns false if n is not a mapping.
func (d *decoder) mapping(n *yaml.Node, field string, known []string, fn func(key string, k, v *yaml.Node)) bool {
	n = resolve(n)
	if isNull(n) {
		return true
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, field, "want a mapping, not %s", describe(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errf(k, field, "mapping keys must be plain names")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errf(k, field, "duplicate field %q (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		ok := false
		for _, f := range known {
			if f == k.Value {
				ok = true
				break
			}
		}
		if !ok {
			d.errf(k, field, "unknown field %q (want %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		fn(k.Value, k, v)
	}
	return true
}

// seq returns the items of a sequence node; null is empty.
func (d *decoder) seq(n *yaml.Node, field string) []*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, field, "want a list, not %s", describe(n))
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func (d *decoder) str(n *yaml.Node, field string) (string, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.errf(n, field, "want a string, not %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// integer parses a plain decimal integer scalar.
func (d *decoder) integer(n *yaml.Node, field string) (int64, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!str") || !decimal().MatchString(n.Value) {
		d.errf(n, field, "want a decimal integer, not %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		d.errf(n, field, "%s is out of range", n.Value)
		return 0, false
	}
	return v, true
}

var decimal = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`) })

func (d *decoder) strList(n *yaml.Node, field string, each func(i int, s string, n *yaml.Node)) {
	seen := map[string]int{}
	for i, it := range d.seq(n, field) {
		f := index(field, i)
		s, ok := d.str(it, f)
		if !ok {
			continue
		}
		if first, dup := seen[s]; dup {
			d.errf(it, f, "%q is listed twice (first at line %d)", s, first)
			continue
		}
		seen[s] = it.Line
		each(i, s, it)
	}
}

var policyFields = []string{"version", "presets", "network", "filesystem", "resources", "local_ports", "provider_tools"}

func (d *decoder) policy(n *yaml.Node) *Policy {
	n = resolve(n)
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return &Policy{Version: Version}
		}
		n = resolve(n.Content[0])
	}
	p := &Policy{Version: Version}
	d.mapping(n, "", policyFields, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			if isNull(v) {
				return
			}
			if ver, ok := d.integer(v, "version"); ok && ver != 0 && ver != Version {
				d.errf(v, "version", "%d is not supported (this build reads version %d)", ver, Version)
			}
		case "presets":
			d.strList(v, "presets", func(i int, s string, n *yaml.Node) {
				if _, ok := lookupPreset(s); !ok {
					d.errf(n, index("presets", i), "unknown preset %q (want one of %s)", s, strings.Join(presetNames(), ", "))
					return
				}
				p.Presets = append(p.Presets, s)
			})
		case "network":
			names := map[string]int{}
			for i, rn := range d.seq(v, "network") {
				r, ok := d.rule(rn, index("network", i))
				if !ok {
					continue
				}
				if first, dup := names[r.Name]; dup {
					d.errf(rn, index("network", i)+".name", "duplicate rule name %q (first at line %d)", r.Name, first)
					continue
				}
				names[r.Name] = rn.Line
				p.Network = append(p.Network, r)
				d.ruleLines = append(d.ruleLines, rn.Line)
			}
		case "filesystem":
			d.filesystem(v, &p.Filesystem)
		case "resources":
			d.resources(v, &p.Resources)
		case "local_ports":
			p.LocalPorts = d.ports(v, "local_ports")
		case "provider_tools":
			d.strList(v, "provider_tools", func(i int, s string, n *yaml.Node) {
				for _, t := range providerToolNames {
					if t == s {
						p.ProviderTools = append(p.ProviderTools, s)
						return
					}
				}
				d.errf(n, index("provider_tools", i), "unknown provider tool %q (want one of %s)", s, strings.Join(providerToolNames, ", "))
			})
		}
	})
	if len(d.errs) == 0 {
		for _, c := range contradictions(p.Network) {
			d.errf(&yaml.Node{Line: d.ruleLines[c.restricted]}, index("network", c.restricted), "%s", c.msg)
		}
	}
	return p
}

var ruleFields = []string{"name", "hosts", "cidrs", "ports", "methods", "paths"}

// ruleName is what a rule name may look like: it appears in logs, 403
// bodies and metric labels. Preset rules use "preset/part", which this
// pattern excludes, so the two never collide.
var ruleName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`) })

func (d *decoder) rule(n *yaml.Node, field string) (Rule, bool) {
	var r Rule
	before := len(d.errs)
	hasName := false
	if !d.mapping(n, field, ruleFields, func(key string, k, v *yaml.Node) {
		f := join(field, key)
		switch key {
		case "name":
			if s, ok := d.str(v, f); ok {
				hasName = true
				if !ruleName().MatchString(s) {
					d.errf(v, f, "%q is not a rule name (lower-case letters, digits, '.', '_', '-'; at most 63)", s)
				}
				r.Name = s
			}
		case "hosts":
			d.strList(v, f, func(i int, s string, n *yaml.Node) {
				h, err := NormalizeHostPattern(s)
				if err != nil {
					d.errf(n, index(f, i), "%v", err)
					return
				}
				for _, prev := range r.Hosts {
					if prev == h {
						d.errf(n, index(f, i), "%q is the same host as %q listed before", s, prev)
						return
					}
				}
				r.Hosts = append(r.Hosts, h)
			})
		case "cidrs":
			d.strList(v, f, func(i int, s string, n *yaml.Node) {
				p, err := ParseCIDR(s)
				if err != nil {
					d.errf(n, index(f, i), "%v", err)
					return
				}
				r.CIDRs = append(r.CIDRs, p.String())
			})
		case "ports":
			r.Ports = d.ports(v, f)
		case "methods":
			d.strList(v, f, func(i int, s string, n *yaml.Node) {
				if err := checkMethod(s); err != nil {
					d.errf(n, index(f, i), "%v", err)
					return
				}
				r.Methods = append(r.Methods, s)
			})
		case "paths":
			d.strList(v, f, func(i int, s string, n *yaml.Node) {
				if err := checkPathGlob(s); err != nil {
					d.errf(n, index(f, i), "%v", err)
					return
				}
				r.Paths = append(r.Paths, s)
			})
		}
	}) {
		return r, false
	}
	if !hasName && len(d.errs) == before {
		d.errf(n, join(field, "name"), "missing: every rule needs a name")
	}
	if len(r.Hosts) == 0 && len(r.CIDRs) == 0 && len(d.errs) == before {
		d.errf(n, field, "a rule needs hosts or cidrs")
	}
	return r, len(d.errs) == before
}

// ports decodes a list of distinct TCP ports.
func (d *decoder) ports(n *yaml.Node, field string) []int {
	var out []int
	seen := map[int64]bool{}
	for i, pn := range d.seq(n, field) {
		fi := index(field, i)
		port, ok := d.integer(pn, fi)
		if !ok {
			continue
		}
		if port < 1 || port > 65535 {
			d.errf(pn, fi, "%d is not a port", port)
			continue
		}
		if seen[port] {
			d.errf(pn, fi, "port %d is listed twice", port)
			continue
		}
		seen[port] = true
		out = append(out, int(port))
	}
	return out
}

func (d *decoder) filesystem(n *yaml.Node, fs *Filesystem) {
	seen := map[string]string{}
	d.mapping(n, "filesystem", []string{"read_only", "read_write"}, func(key string, k, v *yaml.Node) {
		f := join("filesystem", key)
		d.strList(v, f, func(i int, s string, n *yaml.Node) {
			if err := checkFSPath(s); err != nil {
				d.errf(n, index(f, i), "%v", err)
				return
			}
			if other, dup := seen[s]; dup {
				d.errf(n, index(f, i), "%q is already listed under %s", s, other)
				return
			}
			seen[s] = f
			if key == "read_only" {
				fs.ReadOnly = append(fs.ReadOnly, s)
			} else {
				fs.ReadWrite = append(fs.ReadWrite, s)
			}
		})
	})
}

func checkFSPath(s string) error {
	switch {
	case !strings.HasPrefix(s, "/"):
		return fmt.Errorf("%q is not an absolute path", s)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%q contains a control character", s)
	case path.Clean(s) != s:
		return fmt.Errorf("%q is not a clean path (want %q)", s, path.Clean(s))
	case s == "/":
		return errors.New(`"/" would expose the whole host filesystem`)
	}
	return nil
}

func (d *decoder) resources(n *yaml.Node, r *Resources) {
	d.mapping(n, "resources", []string{"memory", "pids", "cpu", "disk", "tmp"}, func(key string, k, v *yaml.Node) {
		f := join("resources", key)
		if isNull(v) {
			return
		}
		switch key {
		case "memory", "disk", "tmp":
			if v.Kind != yaml.ScalarNode {
				d.errf(v, f, "want a size such as 512MiB or 1GiB, not %s", describe(v))
				return
			}
			b, err := ParseByteSize(v.Value)
			if err != nil {
				d.errf(v, f, "%v", err)
				return
			}
			switch key {
			case "memory":
				r.Memory = b
			case "disk":
				r.Disk = b
			case "tmp":
				r.Tmp = b
			}
		case "pids":
			if x, ok := d.integer(v, f); ok {
				if x < 0 || x > math.MaxInt32 {
					d.errf(v, f, "%d is not a task count", x)
					return
				}
				r.Pids = int(x)
			}
		case "cpu":
			x, err := strconv.ParseFloat(v.Value, 64)
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") || err != nil {
				d.errf(v, f, "want a number of CPUs such as 1 or 0.5, not %s", describe(v))
				return
			}
			if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) || x > 4096 {
				d.errf(v, f, "%s is not a CPU count", v.Value)
				return
			}
			r.CPU = x
		}
	})
}

// NormalizeHostPattern validates and normalises a host as written in a
// rule: an exact name or "*." followed by a name of at least two labels.
// IP addresses are refused (they belong under cidrs), as are numeric host
// tricks and wildcards anywhere but a leading "*.".
func NormalizeHostPattern(s string) (string, error) {
	base, wild := strings.CutPrefix(s, "*.")
	if strings.Contains(base, "*") {
		return "", fmt.Errorf("%q: a wildcard is allowed only as a leading \"*.\"", s)
	}
	if h, port, ok := strings.Cut(base, ":"); ok && !strings.Contains(port, ":") && h != "" {
		return "", fmt.Errorf("%q: a host takes no port; list ports under ports", s)
	}
	if a, ok, err := hostport.ParseIPLiteral(base); err != nil {
		return "", err
	} else if ok {
		return "", fmt.Errorf("%q is an IP address: list it under cidrs as %s", s, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	h, err := hostport.NormalizeHost(base)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid host name: %w", s, err)
	}
	if _, ok, _ := hostport.ParseIPLiteral(h); ok {
		return "", fmt.Errorf("%q spells an IP address: list it under cidrs", s)
	}
	if wild {
		if !strings.Contains(h, ".") {
			return "", fmt.Errorf("%q is too broad: a wildcard needs at least two labels after \"*.\"", s)
		}
		return "*." + h, nil
	}
	return h, nil
}

// ParseCIDR parses a rule's address range: canonical (no bits set beyond
// the prefix length), no zone, IPv4 ranges in IPv4 form.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed in cidrs", s)
	}
	if !strings.Contains(s, "/") {
		if a, err := netip.ParseAddr(s); err == nil {
			return netip.Prefix{}, fmt.Errorf("%q has no prefix length (for one address write %s)", s, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range such as 10.0.5.0/24 or 2001:db8::/48", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 ranges in IPv4 form", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set beyond the prefix length (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// httpMethods a rule may restrict plain HTTP requests to. CONNECT is not
// among them: a tunnel is what a rule without methods allows.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func checkMethod(m string) error {
	for _, k := range httpMethods {
		if m == k {
			return nil
		}
	}
	if m == "CONNECT" {
		return errors.New(`"CONNECT" cannot be listed: a rule without methods and paths allows tunnels`)
	}
	return fmt.Errorf("%q is not an HTTP method (want one of %s)", m, strings.Join(httpMethods, ", "))
}
