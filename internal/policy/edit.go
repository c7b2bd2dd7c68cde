package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/hostport"
)

// Clone returns a deep copy of p.
func (p *Policy) Clone() *Policy {
	c := *p
	c.Presets = slices.Clone(p.Presets)
	c.Network = make([]Rule, len(p.Network))
	for i, r := range p.Network {
		c.Network[i] = r.clone()
	}
	if p.Network == nil {
		c.Network = nil
	}
	c.Filesystem.ReadOnly = slices.Clone(p.Filesystem.ReadOnly)
	c.Filesystem.ReadWrite = slices.Clone(p.Filesystem.ReadWrite)
	c.ProviderTools = slices.Clone(p.ProviderTools)
	c.LocalPorts = slices.Clone(p.LocalPorts)
	return &c
}

func (r Rule) clone() Rule {
	r.Hosts = slices.Clone(r.Hosts)
	r.CIDRs = slices.Clone(r.CIDRs)
	r.Ports = slices.Clone(r.Ports)
	r.Methods = slices.Clone(r.Methods)
	r.Paths = slices.Clone(r.Paths)
	return r
}

// Marshal returns p as a policy YAML document that Parse accepts.
func (p *Policy) Marshal() ([]byte, error) {
	return yaml.Marshal(p)
}

// Validate checks a policy built or changed in code (for example by an
// approval adding a rule) with exactly the rules Parse applies, returning
// the normalised policy. source names it in errors.
func (p *Policy) Validate(source string) (*Policy, error) {
	data, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal policy: %w", err)
	}
	np, err := Parse(data, source)
	if err != nil {
		// Lines of the marshalled document mean nothing to the caller.
		return nil, withoutLines(err)
	}
	return np, nil
}

func withoutLines(err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		if pe, ok := e.(*Error); ok {
			c := *pe
			c.Line = 0
			e = &c
		}
		out[i] = e
	}
	return errors.Join(out...)
}

// WithRule returns a validated copy of p with r appended to its rules.
func (p *Policy) WithRule(r Rule) (*Policy, error) {
	c := p.Clone()
	c.Network = append(c.Network, r.clone())
	return c.Validate("policy")
}

// WithoutRule returns a copy of p without the rule named name, and whether
// there was one.
func (p *Policy) WithoutRule(name string) (*Policy, bool) {
	c := p.Clone()
	i := slices.IndexFunc(c.Network, func(r Rule) bool { return r.Name == name })
	if i < 0 {
		return c, false
	}
	c.Network = slices.Delete(c.Network, i, i+1)
	return c, true
}

// RuleFor builds the rule that allows one destination, as `clawcage policy
// allow S HOST[:PORT]` and approvals do: "host", "host:port", "[v6]:port"
// or an IPv4/IPv6 literal (which becomes a single-address cidr). The port
// defaults to 443. The host is normalised; wildcards are accepted.
func RuleFor(name, dest string) (Rule, error) {
	host, port, err := hostport.Split(dest, DefaultPort)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Name: name, Ports: []int{port}}
	if a, ok, err := hostport.ParseIPLiteral(host); err != nil {
		return Rule{}, err
	} else if ok {
		r.CIDRs = []string{netipPrefixString(a)}
		return r, nil
	}
	h, err := NormalizeHostPattern(host)
	if err != nil {
		return Rule{}, err
	}
	r.Hosts = []string{h}
	return r, nil
}

// DisplayDestination renders a destination for an operator deciding on an
// approval: the whole normalised host (punycode, never truncated, never the
// Unicode form a homograph relies on) and the port, with a note when the
// name is internationalised. A host that does not normalise is shown
// quoted with every non-printable or non-ASCII byte escaped.
func DisplayDestination(host string, port int) string {
	h, err := hostport.NormalizeHost(host)
	if err != nil {
		return strconv.QuoteToASCII(host) + ":" + strconv.Itoa(port) + " (invalid host)"
	}
	s := hostport.Join(h, port)
	if strings.HasPrefix(h, "xn--") || strings.Contains(h, ".xn--") {
		s += " (internationalised name)"
	}
	return s
}
