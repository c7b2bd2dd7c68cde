// Package hostport parses and normalises the host and port a sandbox names
// as a destination: "host:port" and "[v6]:port" splitting, host-name
// normalisation (case, trailing dot, IDNA to punycode) and strict IP-literal
// recognition that refuses the numeric spellings (2130706433, 0x7f.1,
// 0177.0.0.1, 127.1) some resolvers and libcs accept. It decides nothing
// about whether a destination is allowed; internal/policy does.
package hostport

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 1035.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// Split splits "host:port", "[v6]:port", "host" or "[v6]" into its host
// (brackets removed, otherwise unchanged) and port. A missing port means
// defaultPort; defaultPort 0 makes the port required. An IPv6 address must
// be bracketed. The port is decimal, 1-65535, without sign or leading zeros.
func Split(hostport string, defaultPort int) (host string, port int, err error) {
	if hostport == "" {
		return "", 0, errors.New("empty host")
	}
	rest := ""
	if hostport[0] == '[' {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("%q: missing ']' after IPv6 address", hostport)
		}
		host = hostport[1:end]
		if !strings.Contains(host, ":") {
			return "", 0, fmt.Errorf("%q: only an IPv6 address may be bracketed", hostport)
		}
		rest = hostport[end+1:]
		if rest != "" && rest[0] != ':' {
			return "", 0, fmt.Errorf("%q: unexpected %q after ']'", hostport, rest)
		}
	} else {
		i := strings.LastIndexByte(hostport, ':')
		if i < 0 {
			host = hostport
		} else {
			host, rest = hostport[:i], hostport[i:]
			if strings.ContainsAny(host, "[]") {
				return "", 0, fmt.Errorf("%q: unexpected bracket", hostport)
			}
			if strings.Contains(host, ":") {
				return "", 0, fmt.Errorf("%q: an IPv6 address must be written in brackets, as [addr]:port", hostport)
			}
		}
		if strings.ContainsAny(host, "[]") {
			return "", 0, fmt.Errorf("%q: unexpected bracket", hostport)
		}
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: empty host", hostport)
	}
	if rest == "" {
		if defaultPort == 0 {
			return "", 0, fmt.Errorf("%q: missing port", hostport)
		}
		if defaultPort < 1 || defaultPort > 65535 {
			return "", 0, fmt.Errorf("default port %d is not a port", defaultPort)
		}
		return host, defaultPort, nil
	}
	port, err = ParsePort(rest[1:])
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", hostport, err)
	}
	return host, port, nil
}

// ParsePort parses a decimal port number 1-65535 written without sign,
// spaces or leading zeros.
func ParsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if len(s) > 5 || (s[0] == '0') {
		return 0, fmt.Errorf("%q is not a port", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a port", s)
		}
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port", s)
	}
	return p, nil
}

// Join is the inverse of Split: it brackets IPv6 addresses.
func Join(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// ParseIPLiteral reports whether s is an IP address literal. It recognises
// only the canonical dotted-quad IPv4 form and IPv6 (optionally bracketed,
// without zone); one trailing dot after an IPv4 address is tolerated. A
// string that is neither a canonical address nor a plausible host name
// because its last label is numeric (2130706433, 0x7f.1, 0177.0.0.1,
// 127.1, 1.2.3, 1.2.3.4.5) is an error: such a host must be treated neither
// as a name nor as an address. Otherwise ok is false and s is a name.
func ParseIPLiteral(s string) (addr netip.Addr, ok bool, err error) {
	if s == "" {
		return netip.Addr{}, false, errors.New("empty host")
	}
	if s[0] == '[' || s[len(s)-1] == ']' {
		if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
			return netip.Addr{}, false, fmt.Errorf("%q: unbalanced brackets", s)
		}
		inner := s[1 : len(s)-1]
		if !strings.Contains(inner, ":") {
			return netip.Addr{}, false, fmt.Errorf("%q: only an IPv6 address may be bracketed", s)
		}
		s = inner
	}
	if strings.Contains(s, ":") {
		if strings.Contains(s, "%") {
			return netip.Addr{}, false, fmt.Errorf("%q: IPv6 zones are not allowed", s)
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() {
			return netip.Addr{}, false, fmt.Errorf("%q is not a valid IPv6 address", s)
		}
		return a, true, nil
	}
	t := strings.TrimSuffix(s, ".")
	last := t
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		last = t[i+1:]
	}
	if !numericLabel(last) {
		return netip.Addr{}, false, nil
	}
	a, err := netip.ParseAddr(t)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false, fmt.Errorf("%q is a numeric host that is not a canonical dotted-quad IPv4 address", s)
	}
	return a, true, nil
}

// numericLabel reports whether a label would make a URL parser or inet_aton
// read the host as a number: all decimal digits, or 0x followed by hex
// digits (WHATWG URL "ends in a number").
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if !isHex(l[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// profile is UTS #46 lookup processing (mapping, STD3 rules, Bidi and
// ContextJ checks, DNS lengths) without CheckHyphens, which browsers also
// leave off because real names such as "r1---sn-x.example" break it.
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.VerifyDNSLength(true),
	idna.CheckHyphens(false),
)

// NormalizeHost returns the canonical form of a destination host: a host
// name lower-cased, without its trailing dot, converted to punycode (IDNA
// UTS #46 lookup rules, so fullwidth and other compatibility spellings map
// to their ASCII form); or an IP address literal in its canonical text form
// (IPv6 without brackets). It rejects control characters, spaces, '%',
// empty labels, labels over 63 and names over 253 bytes, labels that are
// not letters, digits and inner hyphens after mapping, and numeric tricks.
func NormalizeHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty host")
	}
	if len(s) > 4*maxNameLen {
		return "", fmt.Errorf("host of %d bytes is too long", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == ' ' || c == '%' || c == '/' || c == '\\' || c == '@' {
			return "", fmt.Errorf("host %q contains %q", s, c)
		}
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("host %q is not valid UTF-8", s)
	}
	if a, ok, err := ParseIPLiteral(s); err != nil {
		return "", err
	} else if ok {
		return a.String(), nil
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" || strings.HasSuffix(name, ".") {
		return "", fmt.Errorf("host %q has an empty label", s)
	}
	if isLDH(name) {
		// ASCII letters, digits, hyphens and dots: UTS #46 mapping is just
		// lower-casing, so skip the IDNA machinery.
		name = strings.ToLower(name)
	}
	if !isLDHLower(name) || hasPunyLabel(name) {
		var err error
		name, err = profile.ToASCII(name)
		if err != nil {
			return "", fmt.Errorf("host %q is not a valid internationalised name: %w", s, err)
		}
		name = strings.TrimSuffix(name, ".")
		// Punycode labels must decode to a valid label and encode back to
		// themselves, so that one host has exactly one spelling.
		if hasPunyLabel(name) {
			if again, err := profile.ToASCII(name); err != nil || again != name {
				return "", fmt.Errorf("host %q has an invalid punycode label", s)
			}
		}
		// The mapping may have produced digits, dots or a new trailing dot
		// (fullwidth digits, ideographic full stops): check again.
		if a, ok, err := ParseIPLiteral(name); err != nil {
			return "", err
		} else if ok {
			return a.String(), nil
		}
	}
	if err := checkLDH(name); err != nil {
		return "", fmt.Errorf("host %q: %w", s, err)
	}
	return name, nil
}

// isLDHLower reports whether s holds only lower-case letters, digits,
// hyphens and dots: the fast path that needs no IDNA processing.
func isLDHLower(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isLDH reports whether s holds only ASCII letters, digits, hyphens and dots.
func isLDH(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !((c >= 'a' && c <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.') {
			return false
		}
	}
	return true
}

// hasPunyLabel reports whether a label starts with the ACE prefix, which
// must be decoded and validated by the IDNA profile.
func hasPunyLabel(s string) bool {
	for {
		if strings.HasPrefix(s, "xn--") {
			return true
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
}

// checkLDH validates an ASCII host name: letters, digits and hyphens,
// labels 1-63 bytes not starting or ending with a hyphen, 253 bytes in all.
func checkLDH(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("name of %d bytes is longer than %d", len(name), maxNameLen)
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
				return fmt.Errorf("invalid character %q", c)
			}
			continue
		}
		l := name[start:i]
		switch {
		case l == "":
			return errors.New("empty label")
		case len(l) > maxLabelLen:
			return fmt.Errorf("label of %d bytes is longer than %d", len(l), maxLabelLen)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		start = i + 1
	}
	return nil
}
