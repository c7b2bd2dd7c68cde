package createcmd

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Definition writes the sandbox as a clawcage.yaml fragment that holds only
// it: its command, environment, restart policy and presets. The supervisor
// validates it again with config.Parse, with line numbers in this text, so
// the only errors here are those of the flags themselves (an --env without
// "=" or given twice, text that is not UTF-8). Every string is written
// double-quoted on one line, with everything YAML would not read back
// verbatim escaped; the cobra command writes the same text when no policy
// file is given.
func Definition(name string, command, env []string, restart string, presets []string) ([]byte, error) {
	var b strings.Builder
	q := func(s string) error {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%q is not valid UTF-8", s)
		}
		quote(&b, s)
		return nil
	}
	b.WriteString("sandboxes:\n  ")
	if err := q(name); err != nil {
		return nil, fmt.Errorf("sandbox name: %w", err)
	}
	b.WriteString(":")
	n := b.Len()
	if len(command) > 0 {
		b.WriteString("\n    command: [")
		for i, a := range command {
			if i > 0 {
				b.WriteString(", ")
			}
			if err := q(a); err != nil {
				return nil, fmt.Errorf("command: %w", err)
			}
		}
		b.WriteString("]")
	}
	if len(env) > 0 {
		b.WriteString("\n    env:")
		seen := map[string]bool{}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--env %q: want KEY=VALUE", kv)
			}
			if seen[k] {
				return nil, fmt.Errorf("--env %s given twice", k)
			}
			seen[k] = true
			b.WriteString("\n      ")
			if err := q(k); err != nil {
				return nil, fmt.Errorf("--env: %w", err)
			}
			b.WriteString(": ")
			if err := q(v); err != nil {
				return nil, fmt.Errorf("--env %s: %w", k, err)
			}
		}
	}
	if restart != "" {
		b.WriteString("\n    restart: ")
		if err := q(restart); err != nil {
			return nil, fmt.Errorf("--restart: %w", err)
		}
	}
	if len(presets) > 0 {
		b.WriteString("\n    policy:\n      presets: [")
		for i, p := range presets {
			if i > 0 {
				b.WriteString(", ")
			}
			if err := q(p); err != nil {
				return nil, fmt.Errorf("--preset: %w", err)
			}
		}
		b.WriteString("]")
	}
	if b.Len() == n {
		b.WriteString(" {}")
	}
	b.WriteString("\n")
	return []byte(b.String()), nil
}

// quote writes s (valid UTF-8) as a YAML double-quoted scalar. Line breaks
// (which YAML folds), tabs, the characters YAML does not allow in a stream
// (C0 and C1 controls, DEL, surrogates, U+FFFE, U+FFFF), the byte order mark
// and the Unicode line and paragraph separators are escaped, as are '"' and
// '\'.
func quote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff,
			r >= 0xd800 && r <= 0xdfff, r == 0xfffe, r == 0xffff:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
