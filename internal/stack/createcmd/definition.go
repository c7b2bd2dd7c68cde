package createcmd

import (
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/clawcage/clawcage/internal/termesc"
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
	var b []byte
	q := func(s string) error {
		if !utf8.ValidString(s) {
			return errors.New(strconv.Quote(s) + " is not valid UTF-8")
		}
		b = quote(b, s)
		return nil
	}
	b = append(b, "sandboxes:\n  "...)
	if err := q(name); err != nil {
		return nil, errors.New("sandbox name: " + err.Error())
	}
	b = append(b, ":"...)
	n := len(b)
	if len(command) > 0 {
		b = append(b, "\n    command: ["...)
		for i, a := range command {
			if i > 0 {
				b = append(b, ", "...)
			}
			if err := q(a); err != nil {
				return nil, errors.New("command: " + err.Error())
			}
		}
		b = append(b, "]"...)
	}
	if len(env) > 0 {
		b = append(b, "\n    env:"...)
		seen := map[string]bool{}
		for _, kv := range env {
			k, v, ok := cut(kv, "=")
			if !ok || k == "" {
				return nil, errors.New("--env " + strconv.Quote(kv) + ": want KEY=VALUE")
			}
			if seen[k] {
				return nil, errors.New("--env " + k + " given twice")
			}
			seen[k] = true
			b = append(b, "\n      "...)
			if err := q(k); err != nil {
				return nil, errors.New("--env: " + err.Error())
			}
			b = append(b, ": "...)
			if err := q(v); err != nil {
				return nil, errors.New("--env " + k + ": " + err.Error())
			}
		}
	}
	if restart != "" {
		b = append(b, "\n    restart: "...)
		if err := q(restart); err != nil {
			return nil, errors.New("--restart: " + err.Error())
		}
	}
	if len(presets) > 0 {
		b = append(b, "\n    policy:\n      presets: ["...)
		for i, p := range presets {
			if i > 0 {
				b = append(b, ", "...)
			}
			if err := q(p); err != nil {
				return nil, errors.New("--preset: " + err.Error())
			}
		}
		b = append(b, "]"...)
	}
	if len(b) == n {
		b = append(b, " {}"...)
	}
	b = append(b, "\n"...)
	return b, nil
}

// quote writes s (valid UTF-8) as a YAML double-quoted scalar. Line breaks
// (which YAML folds), tabs, the characters YAML does not allow in a stream
// (C0 and C1 controls, DEL, surrogates, U+FFFE, U+FFFF), the byte order mark
// and the Unicode line and paragraph separators are escaped, as are '"' and
// '\'.
func quote(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"':
			b = append(b, `\"`...)
		case r == '\\':
			b = append(b, `\\`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff,
			r >= 0xd800 && r <= 0xdfff, r == 0xfffe, r == 0xffff:
			b = termesc.AppendHexEscape(b, 'u', r, 4)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
