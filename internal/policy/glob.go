package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// maxPathGlob bounds a path glob's length.
const maxPathGlob = 1024

// checkPathGlob validates a rule's path glob: absolute, printable, no query
// or fragment, no dot segments, and "*" and "**" only as whole wildcards.
func checkPathGlob(g string) error {
	switch {
	case !strings.HasPrefix(g, "/"):
		return fmt.Errorf("%q must start with /", g)
	case len(g) > maxPathGlob:
		return fmt.Errorf("path glob of %d bytes is longer than %d", len(g), maxPathGlob)
	case strings.ContainsFunc(g, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("%q contains a space or control character", g)
	case strings.ContainsAny(g, "#\\"):
		return fmt.Errorf("%q may not contain '#' or '\\'", g)
	case strings.Contains(g, "***"):
		return fmt.Errorf("%q: use * (within one segment) or ** (across segments)", g)
	}
	for _, seg := range strings.Split(g, "/") {
		if seg == "." || seg == ".." {
			return errors.New("path globs may not contain . or .. segments")
		}
	}
	return nil
}

// compileGlob turns a path glob into an anchored regular expression:
// "**" matches any run of characters, "*" any run without '/', "?" one
// character other than '/'. Go's regexp engine runs in linear time, so a
// long hostile path cannot make matching slow.
func compileGlob(g string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^`)
	for i := 0; i < len(g); i++ {
		switch {
		case strings.HasPrefix(g[i:], "**"):
			b.WriteString(`.*`)
			i++
		case g[i] == '*':
			b.WriteString(`[^/]*`)
		case g[i] == '?':
			b.WriteString(`[^/]`)
		default:
			b.WriteString(regexp.QuoteMeta(g[i : i+1]))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

// safeRequestPath reports whether a request path (escaped form, without
// the query) can be matched against globs without ambiguity: absolute,
// printable, and free of dot segments and of encoded '/', '\' and '.'
// that a server might decode into them.
func safeRequestPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c == 0x7f || c == '\\' || c == '#' || c == '?' {
			return false
		}
		if c == '%' {
			if i+2 >= len(p) {
				return false
			}
			h := strings.ToLower(p[i+1 : i+3])
			if h == "2f" || h == "5c" || h == "2e" || h == "00" {
				return false
			}
		}
	}
	for rest := p; rest != ""; {
		i := strings.IndexByte(rest[1:], '/')
		seg := rest[1:]
		if i >= 0 {
			seg = rest[1 : i+1]
			rest = rest[i+1:]
		} else {
			rest = ""
		}
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
