package policy

import (
	"bytes"
	"embed"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/hostport"
)

//go:embed presets/*.yaml
var presetFS embed.FS

// PresetInfo describes an embedded preset, for `clawcage policy presets`.
type PresetInfo struct {
	// Name is what a policy lists under presets.
	Name string
	// Description says what the preset is for.
	Description string
	// Rules are the preset's rules. A rule with FromParam set gets its
	// hosts and ports from that parameter's value at Compile time.
	Rules []PresetRule
	// Params are the parameters the preset takes.
	Params []PresetParam
}

// PresetRule is one rule of a preset.
type PresetRule struct {
	Rule `yaml:",inline"`
	// FromParam names the parameter whose URLs supply the rule's hosts and
	// ports; empty for a rule with fixed hosts.
	FromParam string `yaml:"from_param"`
}

// Parameter kinds.
const (
	// ParamURLs is a list of http(s) URLs separated by commas, '|' or
	// white space; "direct", "off" and file: URLs are skipped (GOPROXY syntax).
	ParamURLs = "urls"
	// ParamGoSumDB is a GOSUMDB value: "off", "name[+key]" or "name[+key] URL".
	ParamGoSumDB = "gosumdb"
)

// PresetParam is a preset parameter such as "npm.registry".
type PresetParam struct {
	// Name is the key in CompileOptions.PresetParams.
	Name string `yaml:"name"`
	// Description says what the value is.
	Description string `yaml:"description"`
	// Kind is ParamURLs or ParamGoSumDB.
	Kind string `yaml:"kind"`
	// Discovery says where DiscoverPresetParams finds the value.
	Discovery string `yaml:"discovery"`
	// Optional parameters may be absent; their rules are then left out.
	Optional bool `yaml:"optional"`
}

type presetFile struct {
	Description string        `yaml:"description"`
	Params      []PresetParam `yaml:"params"`
	Network     []PresetRule  `yaml:"network"`
}

// presets returns the embedded presets, parsed on first use (not at
// package initialization: every clawcage start would pay for it); the map is
// read-only. A bad embedded preset panics, on first use;
// TestEmbeddedPresetsParse parses them all.
var presets = sync.OnceValue(mustLoadPresets)

func mustLoadPresets() map[string]PresetInfo {
	entries, err := presetFS.ReadDir("presets")
	if err != nil {
		panic(err)
	}
	out := make(map[string]PresetInfo, len(entries))
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		data, err := presetFS.ReadFile(path.Join("presets", e.Name()))
		if err != nil {
			panic(err)
		}
		info, err := parsePreset(name, data)
		if err != nil {
			panic(fmt.Sprintf("embedded preset %s: %v", name, err))
		}
		out[name] = info
	}
	return out
}

func parsePreset(name string, data []byte) (PresetInfo, error) {
	var f presetFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return PresetInfo{}, err
	}
	if f.Description == "" || len(f.Network) == 0 {
		return PresetInfo{}, fmt.Errorf("needs a description and rules")
	}
	params := map[string]bool{}
	for _, p := range f.Params {
		if p.Kind != ParamURLs && p.Kind != ParamGoSumDB {
			return PresetInfo{}, fmt.Errorf("param %s: unknown kind %q", p.Name, p.Kind)
		}
		params[p.Name] = true
	}
	for i, r := range f.Network {
		if !ruleName().MatchString(r.Name) {
			return PresetInfo{}, fmt.Errorf("rule %q: bad name", r.Name)
		}
		if r.FromParam != "" {
			if !params[r.FromParam] || len(r.Hosts) > 0 || len(r.CIDRs) > 0 || len(r.Ports) > 0 {
				return PresetInfo{}, fmt.Errorf("rule %s: from_param %q must name a parameter and replace hosts, cidrs and ports", r.Name, r.FromParam)
			}
		}
		for j, h := range r.Hosts {
			n, err := NormalizeHostPattern(h)
			if err != nil {
				return PresetInfo{}, err
			}
			f.Network[i].Hosts[j] = n
		}
		if r.FromParam == "" && len(r.Ports) == 0 {
			f.Network[i].Ports = []int{DefaultPort}
		}
		f.Network[i].Name = name + "/" + r.Name
	}
	return PresetInfo{Name: name, Description: strings.TrimSpace(f.Description), Rules: f.Network, Params: f.Params}, nil
}

func lookupPreset(name string) (PresetInfo, bool) {
	p, ok := presets()[name]
	return p, ok
}

func presetNames() []string {
	names := make([]string, 0, len(presets()))
	for n := range presets() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Presets describes every embedded preset, sorted by name.
func Presets() []PresetInfo {
	out := make([]PresetInfo, 0, len(presets()))
	for _, n := range presetNames() {
		p := presets()[n]
		p.Rules = slices.Clone(p.Rules)
		for i := range p.Rules {
			p.Rules[i].Rule = p.Rules[i].Rule.clone()
		}
		p.Params = slices.Clone(p.Params)
		out = append(out, p)
	}
	return out
}

// ExpandPreset returns the rules of preset name, taking the hosts of
// parameterised rules from params. Rule names are "preset/part".
func ExpandPreset(name string, params map[string]string) ([]Rule, error) {
	p, ok := presets()[name]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q (want one of %s)", name, strings.Join(presetNames(), ", "))
	}
	var out []Rule
	for _, pr := range p.Rules {
		if pr.FromParam == "" {
			out = append(out, pr.Rule.clone())
			continue
		}
		var param PresetParam
		for _, x := range p.Params {
			if x.Name == pr.FromParam {
				param = x
			}
		}
		value, have := params[param.Name]
		value = strings.TrimSpace(value)
		if !have || value == "" {
			if param.Optional {
				continue
			}
			return nil, fmt.Errorf("preset %q needs parameter %q (%s; found by %s)", name, param.Name, param.Description, param.Discovery)
		}
		rules, err := paramRules(pr.Rule, param, value)
		if err != nil {
			return nil, fmt.Errorf("preset %q: parameter %s: %w", name, param.Name, err)
		}
		if len(rules) == 0 && !param.Optional {
			return nil, fmt.Errorf("preset %q: parameter %s=%q names no http(s) server to allow", name, param.Name, value)
		}
		out = append(out, rules...)
	}
	return out, nil
}

// endpoint is one host (name or address) and port from a parameter.
type endpoint struct {
	host string
	port int
}

// paramRules builds one rule per port from the endpoints in value.
func paramRules(base Rule, p PresetParam, value string) ([]Rule, error) {
	var eps []endpoint
	switch p.Kind {
	case ParamURLs:
		for _, f := range strings.FieldsFunc(value, func(r rune) bool {
			return r == ',' || r == '|' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
		}) {
			if f == "direct" || f == "off" || strings.HasPrefix(f, "file:") {
				continue
			}
			ep, err := urlEndpoint(f)
			if err != nil {
				return nil, err
			}
			eps = append(eps, ep)
		}
	case ParamGoSumDB:
		fields := strings.Fields(value)
		if len(fields) == 0 || fields[0] == "off" {
			return nil, nil
		}
		u := "https://" + strings.SplitN(fields[0], "+", 2)[0]
		if len(fields) > 1 {
			u = fields[1]
		}
		ep, err := urlEndpoint(u)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	var ports []int
	byPort := map[int]*Rule{}
	for _, ep := range eps {
		r := byPort[ep.port]
		if r == nil {
			r = &Rule{Name: base.Name, Ports: []int{ep.port}, Methods: slices.Clone(base.Methods), Paths: slices.Clone(base.Paths)}
			byPort[ep.port] = r
			ports = append(ports, ep.port)
		}
		if a, ok, _ := hostport.ParseIPLiteral(ep.host); ok {
			c := netipPrefixString(a)
			if !slices.Contains(r.CIDRs, c) {
				r.CIDRs = append(r.CIDRs, c)
			}
		} else if !slices.Contains(r.Hosts, ep.host) {
			r.Hosts = append(r.Hosts, ep.host)
		}
	}
	out := make([]Rule, 0, len(ports))
	for _, port := range ports {
		r := *byPort[port]
		if len(ports) > 1 {
			r.Name += "-" + strconv.Itoa(port)
		}
		out = append(out, r)
	}
	return out, nil
}

func urlEndpoint(s string) (endpoint, error) {
	scheme, hp, ok := httpURLHost(s)
	if !ok {
		return endpoint{}, fmt.Errorf("%q is not an http(s) URL", s)
	}
	def := 443
	if scheme == "http" {
		def = 80
	}
	host, port, err := hostport.Split(hp, def)
	if err != nil {
		return endpoint{}, fmt.Errorf("%q: %w", s, err)
	}
	h, err := hostport.NormalizeHost(host)
	if err != nil {
		return endpoint{}, fmt.Errorf("%q: %w", s, err)
	}
	return endpoint{h, port}, nil
}

// httpURLHost returns the scheme (in lower case) and the host[:port] of an
// http or https URL: what url.Parse gives as Scheme and Host. It is
// stricter than url.Parse: percent-escapes, back slashes, white space and
// control characters are refused anywhere in s.
//
// Package net/url is not used because this package is in the import tree of
// the sandbox's start path, whose init function must run before package net
// is initialized; net/url sorts after net and after most of the binary, so
// importing it would delay that init function past them (see
// internal/sandbox/runcmd). FuzzHTTPURLHost checks it against url.Parse.
func httpURLHost(s string) (scheme, host string, ok bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '%' || c == '\\' {
			return "", "", false
		}
	}
	scheme, rest, found := strings.Cut(s, "://")
	if !found {
		return "", "", false
	}
	scheme = strings.ToLower(scheme)
	if scheme != "http" && scheme != "https" {
		return "", "", false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i] // the authority
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:] // without user information
	}
	if rest == "" {
		return "", "", false
	}
	return scheme, rest, true
}

func netipPrefixString(a netip.Addr) string {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()).String()
}
