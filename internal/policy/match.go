package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/ipclass"
)

// Reasons carried by a Decision. They are stable: they appear unchanged in
// 403 bodies, decision logs and metric labels.
const (
	ReasonAllowed          = "allowed"
	ReasonNoRuleForHost    = "no-rule-for-host"    // no rule names this host
	ReasonNoRuleForAddress = "no-rule-for-address" // an IP destination no cidr rule contains
	ReasonPortNotAllowed   = "port-not-allowed"    // rules name the host, not this port
	ReasonTunnelNotAllowed = "tunnel-not-allowed"  // CONNECT to a host whose rules restrict methods/paths
	ReasonMethodNotAllowed = "method-not-allowed"
	ReasonPathNotAllowed   = "path-not-allowed"
	ReasonSpecialAddress   = "special-address" // loopback, private, metadata, ... not named by a cidr rule
	ReasonInvalidHost      = "invalid-host"    // unparseable host, numeric trick, bad address
	ReasonInvalidPort      = "invalid-port"
	ReasonInvalidPath      = "invalid-path" // dot segments, encoded separators, ...
	ReasonUnknownRule      = "unknown-rule" // DecideAddr named a rule this matcher lacks
)

// Decision is the outcome of one policy check.
type Decision struct {
	// Allow is true when the connection or request may proceed.
	Allow bool
	// Rule names the rule that allowed it or, for a denial, the rule that
	// came closest (matched the host but not the port, method or path).
	Rule string
	// Reason is one of the Reason* constants.
	Reason string
	// Detail is a human-readable explanation (e.g. "loopback 127.0.0.0/8");
	// not stable, not for metric labels.
	Detail string
	// Host is the normalised destination (punycode name or canonical IP
	// text) from DecideName; empty if it could not be normalised.
	Host string
	// Addr is the destination address when DecideName was given an IP
	// literal; otherwise invalid.
	Addr netip.Addr
}

// CompileOptions parameterise Compile.
type CompileOptions struct {
	// PresetParams supplies the parameters of presets whose hosts come from
	// the client's configuration ("npm.registry", "go.proxy", ...); see
	// DiscoverPresetParams.
	PresetParams map[string]string
	// Extra are rules granted at run time (operator approvals), tried after
	// the policy's own and its presets'. An approval may knowingly widen a
	// restricted rule, so Extra is not checked for contradictions with them.
	Extra []Rule
}

type compiledRule struct {
	rule       Rule
	ports      []uint16
	prefixes   []netip.Prefix
	methods    []string
	paths      []*regexp.Regexp
	restricted bool
}

func (r *compiledRule) allowsPort(p int) bool {
	for _, x := range r.ports {
		if int(x) == p {
			return true
		}
	}
	return false
}

type cidrRule struct {
	prefix netip.Prefix
	rule   int32
}

// Matcher decides connections and requests for one compiled policy. It is
// immutable and safe for concurrent use.
type Matcher struct {
	rules  []compiledRule
	byName map[string]int32
	exact  map[string][]int32 // host -> rules naming it exactly
	wild   map[string][]int32 // "example.com" -> rules naming "*.example.com"
	cidrs  []cidrRule
}

// Compile expands the policy's presets and compiles every rule. Rules are
// tried in order: the policy's own rules first, then the presets'.
func (p *Policy) Compile(opts CompileOptions) (*Matcher, error) {
	rules := slices.Clone(p.Network)
	var errs []error
	for _, name := range p.Presets {
		pr, err := ExpandPreset(name, opts.PresetParams)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rules = append(rules, pr...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	checked := len(rules)
	rules = append(rules, opts.Extra...)
	return compile(rules, checked)
}

// NewMatcher compiles rules directly, without presets; the rules must be
// valid (as Parse returns them).
func NewMatcher(rules []Rule) (*Matcher, error) { return compile(slices.Clone(rules), len(rules)) }

// compile builds a matcher; rules[:checked] are checked for contradictions.
func compile(rules []Rule, checked int) (*Matcher, error) {
	m := &Matcher{
		byName: make(map[string]int32, len(rules)),
		exact:  map[string][]int32{},
		wild:   map[string][]int32{},
	}
	var errs []error
	for i, r := range rules {
		if _, dup := m.byName[r.Name]; dup {
			errs = append(errs, fmt.Errorf("rule %q: defined twice", r.Name))
			continue
		}
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("rule %d: missing name", i))
			continue
		}
		cr := compiledRule{methods: r.Methods, restricted: len(r.Methods) > 0 || len(r.Paths) > 0}
		r.Hosts = slices.Clone(r.Hosts)
		r.CIDRs = slices.Clone(r.CIDRs)
		if len(r.Ports) == 0 {
			r.Ports = []int{DefaultPort}
		} else {
			r.Ports = slices.Clone(r.Ports)
		}
		idx := int32(len(m.rules))
		for _, port := range r.Ports {
			if port < 1 || port > 65535 {
				errs = append(errs, fmt.Errorf("rule %q: %d is not a port", r.Name, port))
				continue
			}
			cr.ports = append(cr.ports, uint16(port))
		}
		for j, h := range r.Hosts {
			n, err := NormalizeHostPattern(h)
			if err != nil {
				errs = append(errs, fmt.Errorf("rule %q: %w", r.Name, err))
				continue
			}
			r.Hosts[j] = n
			if base, ok := strings.CutPrefix(n, "*."); ok {
				m.wild[base] = appendOnce(m.wild[base], idx)
			} else {
				m.exact[n] = appendOnce(m.exact[n], idx)
			}
		}
		for _, c := range r.CIDRs {
			pfx, err := ParseCIDR(c)
			if err != nil {
				errs = append(errs, fmt.Errorf("rule %q: %w", r.Name, err))
				continue
			}
			cr.prefixes = append(cr.prefixes, pfx)
			m.cidrs = append(m.cidrs, cidrRule{pfx, idx})
		}
		for _, meth := range r.Methods {
			if err := checkMethod(meth); err != nil {
				errs = append(errs, fmt.Errorf("rule %q: %w", r.Name, err))
			}
		}
		for _, g := range r.Paths {
			if err := checkPathGlob(g); err != nil {
				errs = append(errs, fmt.Errorf("rule %q: %w", r.Name, err))
				continue
			}
			cr.paths = append(cr.paths, compileGlob(g))
		}
		if len(r.Hosts) == 0 && len(r.CIDRs) == 0 {
			errs = append(errs, fmt.Errorf("rule %q: needs hosts or cidrs", r.Name))
		}
		cr.rule = r
		m.byName[r.Name] = idx
		m.rules = append(m.rules, cr)
	}
	if len(errs) == 0 {
		eff := make([]Rule, min(checked, len(m.rules)))
		for i := range eff {
			eff[i] = m.rules[i].rule
		}
		for _, c := range contradictions(eff) {
			errs = append(errs, fmt.Errorf("rule %q: %s", eff[c.restricted].Name, c.msg))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

func appendOnce(s []int32, v int32) []int32 {
	if len(s) > 0 && s[len(s)-1] == v {
		return s
	}
	return append(s, v)
}

// Rules returns the compiled rules in the order they are tried, with
// defaults applied (ports) and hosts normalised; for display.
func (m *Matcher) Rules() []Rule {
	out := make([]Rule, len(m.rules))
	for i := range m.rules {
		r := m.rules[i].rule
		r.Hosts = slices.Clone(r.Hosts)
		r.CIDRs = slices.Clone(r.CIDRs)
		r.Ports = slices.Clone(r.Ports)
		r.Methods = slices.Clone(r.Methods)
		r.Paths = slices.Clone(r.Paths)
		out[i] = r
	}
	return out
}

// Rule returns the compiled rule with the given name.
func (m *Matcher) Rule(name string) (Rule, bool) {
	i, ok := m.byName[name]
	if !ok {
		return Rule{}, false
	}
	return m.Rules()[i], true
}

// denial stages, in order of how close a rule came to allowing.
const (
	stageNone = iota
	stagePort
	stageMethod
	stagePath
)

var stageReason = [...]string{ReasonNoRuleForHost, ReasonPortNotAllowed, ReasonMethodNotAllowed, ReasonPathNotAllowed}

// DecideName is the name stage, decided before any DNS lookup: may the
// sandbox reach host:port? method and path are those of a plain HTTP
// request (path: the escaped path of the request target, without query);
// both are empty for a CONNECT tunnel, which only rules without methods and
// paths allow. host may be a name in any spelling (it is normalised) or an
// IP literal, which only cidr rules allow. An allowed name must still have
// each resolved address checked with DecideAddr.
func (m *Matcher) DecideName(host string, port int, method, path string) Decision {
	if port < 1 || port > 65535 {
		return Decision{Reason: ReasonInvalidPort, Detail: fmt.Sprintf("%d is not a port", port)}
	}
	h, err := hostport.NormalizeHost(host)
	if err != nil {
		return Decision{Reason: ReasonInvalidHost, Detail: err.Error()}
	}
	if method != "" && path == "" {
		path = "/"
	}
	if a, ok, err := hostport.ParseIPLiteral(h); err != nil {
		return Decision{Reason: ReasonInvalidHost, Host: h, Detail: err.Error()}
	} else if ok {
		return m.decideLiteral(a, port, method, path, h)
	}
	best, bestStage, bestRule := int32(-1), stageNone, int32(-1)
	pathOK := -1 // lazily computed safeRequestPath
	try := func(cands []int32) {
		for _, i := range cands {
			if best >= 0 && i >= best {
				continue
			}
			st := m.rules[i].check(port, method, path, &pathOK)
			if st < 0 {
				best = i
			} else if st >= bestStage && (st > bestStage || bestRule < 0 || i < bestRule) {
				bestStage, bestRule = st, i
			}
		}
	}
	try(m.exact[h])
	for rest := h; ; {
		dot := strings.IndexByte(rest, '.')
		if dot < 0 {
			break
		}
		rest = rest[dot+1:]
		try(m.wild[rest])
	}
	if best >= 0 {
		return Decision{Allow: true, Rule: m.rules[best].rule.Name, Reason: ReasonAllowed, Host: h}
	}
	d := Decision{Reason: stageReason[bestStage], Host: h}
	if bestRule >= 0 {
		d.Rule = m.rules[bestRule].rule.Name
		if bestStage == stageMethod && method == "" {
			d.Reason = ReasonTunnelNotAllowed
			d.Detail = "the rule allows only plain HTTP requests with listed methods or paths, not a tunnel"
		}
		if bestStage == stagePath && pathOK == 0 {
			d.Reason = ReasonInvalidPath
		}
	}
	return d
}

// check returns -1 if the rule allows the request, else the stage at which
// it fails.
func (r *compiledRule) check(port int, method, path string, pathOK *int) int {
	if !r.allowsPort(port) {
		return stagePort
	}
	if !r.restricted {
		return -1
	}
	if method == "" {
		return stageMethod
	}
	if len(r.methods) > 0 && !slices.Contains(r.methods, method) {
		return stageMethod
	}
	if len(r.paths) > 0 {
		if *pathOK < 0 {
			*pathOK = 0
			if safeRequestPath(path) {
				*pathOK = 1
			}
		}
		if *pathOK == 0 {
			return stagePath
		}
		for _, g := range r.paths {
			if g.MatchString(path) {
				return -1
			}
		}
		return stagePath
	}
	return -1
}

func (m *Matcher) decideLiteral(a netip.Addr, port int, method, path, h string) Decision {
	a = a.Unmap()
	// Try the cidr rules containing a in rule order: the first that allows
	// the request and whose address check passes wins.
	bestStage, bestRule := stageNone, int32(-1)
	var special Decision
	haveSpecial := false
	pathOK := -1
	for i := range m.rules {
		cr := &m.rules[i]
		if !cr.containsAddr(a) {
			continue
		}
		st := cr.check(port, method, path, &pathOK)
		if st >= 0 {
			if st > bestStage || bestRule < 0 {
				bestStage, bestRule = st, int32(i)
			}
			continue
		}
		d := m.addrCheck(a, port, int32(i))
		if d.Allow {
			d.Host, d.Addr = h, a
			return d
		}
		if !haveSpecial {
			special, haveSpecial = d, true
		}
	}
	if haveSpecial {
		special.Host, special.Addr = h, a
		return special
	}
	d := Decision{Reason: ReasonNoRuleForAddress, Host: h, Addr: a, Detail: "IP destinations are allowed only by cidr rules"}
	if bestRule >= 0 {
		d.Reason, d.Rule, d.Detail = stageReason[bestStage], m.rules[bestRule].rule.Name, ""
		if bestStage == stageMethod && method == "" {
			d.Reason = ReasonTunnelNotAllowed
		}
		if bestStage == stagePath && pathOK == 0 {
			d.Reason = ReasonInvalidPath
		}
	}
	return d
}

func (r *compiledRule) containsAddr(a netip.Addr) bool {
	for _, p := range r.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DecideAddr is the address stage. addr is either a resolved address of a
// name that DecideName allowed by rule nameRule, or an IP-literal
// destination (nameRule ""). An address that is not special-purpose
// (ipclass) is allowed for an allowed name; a special-purpose one only if a
// cidr rule that allows the port names its range explicitly: the rule's
// range lies within the special range and contains the address (so
// 10.0.5.0/24 names 10.0.5.7, 0.0.0.0/0 names no private address), and the
// rule is the name's own rule or one without methods and paths.
// IPv4-mapped addresses are checked as IPv4; addresses embedded in NAT64,
// 6to4, Teredo and IPv4-compatible forms must pass the same check.
//
// With nameRule "" the request is unknown, so only cidr rules without
// methods and paths count: the literal must lie in one that allows the
// port. (DecideName already applies methods and paths to IP literals and
// runs this check with the rule that allowed the request.)
func (m *Matcher) DecideAddr(addr netip.Addr, port int, nameRule string) Decision {
	if port < 1 || port > 65535 {
		return Decision{Reason: ReasonInvalidPort, Rule: nameRule, Detail: fmt.Sprintf("%d is not a port", port)}
	}
	if !addr.IsValid() || addr.Zone() != "" {
		return Decision{Reason: ReasonInvalidHost, Rule: nameRule, Detail: fmt.Sprintf("%q is not a dialable address", addr)}
	}
	a := addr.Unmap()
	if nameRule != "" {
		i, ok := m.byName[nameRule]
		if !ok {
			return Decision{Reason: ReasonUnknownRule, Rule: nameRule, Detail: "the policy has no rule of that name"}
		}
		return m.addrCheck(a, port, i)
	}
	var first Decision
	haveFirst := false
	for i := range m.rules {
		cr := &m.rules[i]
		if cr.restricted || !cr.containsAddr(a) || !cr.allowsPort(port) {
			continue
		}
		d := m.addrCheck(a, port, int32(i))
		if d.Allow {
			return d
		}
		if !haveFirst {
			first, haveFirst = d, true
		}
	}
	if haveFirst {
		return first
	}
	return Decision{Reason: ReasonNoRuleForAddress, Detail: "IP destinations are allowed only by cidr rules without methods or paths"}
}

// addrCheck decides address a on port for rule i, which allowed the name
// or the literal.
func (m *Matcher) addrCheck(a netip.Addr, port int, i int32) Decision {
	rule := m.rules[i].rule.Name
	if !m.rules[i].allowsPort(port) {
		return Decision{Reason: ReasonPortNotAllowed, Rule: rule}
	}
	c := ipclass.Classify(a)
	if c.Special && !m.names(a, c.Range, port, i) {
		return Decision{Reason: ReasonSpecialAddress, Rule: rule, Detail: c.Name + " " + c.Range.String()}
	}
	if c.Inner != nil && c.Inner.Special && !m.names(c.Embedded, c.Inner.Range, port, i) {
		return Decision{Reason: ReasonSpecialAddress, Rule: rule, Detail: c.Name + " embedding " + c.Inner.Name + " " + c.Inner.Range.String()}
	}
	return Decision{Allow: true, Rule: rule, Reason: ReasonAllowed}
}

// names reports whether a cidr rule allowing port names special range r
// for address a: its prefix lies within r and contains a, and it is rule
// i itself or a rule without method/path restrictions (which could reach
// a anyway).
func (m *Matcher) names(a netip.Addr, r netip.Prefix, port int, i int32) bool {
	for _, c := range m.cidrs {
		p := c.prefix
		if !p.Contains(a) || p.Bits() < r.Bits() || !r.Contains(p.Addr()) {
			continue
		}
		cr := &m.rules[c.rule]
		if cr.allowsPort(port) && (c.rule == i || !cr.restricted) {
			return true
		}
	}
	return false
}

// contradiction is a restricted rule made void by an unrestricted one.
type contradiction struct {
	restricted, other int
	msg               string
}

// contradictions finds rules whose method/path restrictions have no effect
// because another rule allows every request to an overlapping host or
// range on an overlapping port.
func contradictions(rules []Rule) []contradiction {
	var out []contradiction
	for b := range rules {
		rb := &rules[b]
		if len(rb.Methods) == 0 && len(rb.Paths) == 0 {
			continue
		}
	next:
		for a := range rules {
			ra := &rules[a]
			if a == b || len(ra.Methods) > 0 || len(ra.Paths) > 0 {
				continue
			}
			port, ok := overlappingPort(ra.Ports, rb.Ports)
			if !ok {
				continue
			}
			for _, hb := range rb.Hosts {
				for _, ha := range ra.Hosts {
					if hostCovers(ha, hb) {
						out = append(out, contradiction{b, a, fmt.Sprintf("restricts methods or paths for %s port %d, but rule %q allows every request there, so the restriction has no effect", hb, port, ra.Name)})
						break next
					}
				}
			}
			for _, cb := range rb.CIDRs {
				pb, err := netip.ParsePrefix(cb)
				if err != nil {
					continue
				}
				for _, ca := range ra.CIDRs {
					pa, err := netip.ParsePrefix(ca)
					if err == nil && pa.Bits() <= pb.Bits() && pa.Contains(pb.Addr()) && namesAlike(pa, pb) {
						out = append(out, contradiction{b, a, fmt.Sprintf("restricts methods or paths for %s port %d, but rule %q allows every request there, so the restriction has no effect", cb, port, ra.Name)})
						break next
					}
				}
			}
		}
	}
	return out
}

// namesAlike reports whether broad range pa (which contains pb) reaches
// the addresses of pb: if pb lies in a special-purpose range, pa reaches
// them only if it names that range too (lies within it).
func namesAlike(pa, pb netip.Prefix) bool {
	c := ipclass.Classify(pb.Addr())
	if !c.Special || c.Range.Bits() > pb.Bits() {
		return true
	}
	return pa.Bits() >= c.Range.Bits()
}

func overlappingPort(a, b []int) (int, bool) {
	if len(a) == 0 {
		a = []int{DefaultPort}
	}
	if len(b) == 0 {
		b = []int{DefaultPort}
	}
	for _, x := range b {
		if slices.Contains(a, x) {
			return x, true
		}
	}
	return 0, false
}

// hostCovers reports whether host pattern a matches every host pattern b
// matches.
func hostCovers(a, b string) bool {
	if a == b {
		return true
	}
	base, wild := strings.CutPrefix(a, "*.")
	if !wild {
		return false
	}
	bb := strings.TrimPrefix(b, "*.")
	return (bb != b && bb == base) || strings.HasSuffix(bb, "."+base)
}
