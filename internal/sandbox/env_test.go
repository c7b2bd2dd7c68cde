package sandbox

import (
	"strings"
	"testing"
)

// FuzzEnv checks the environment rules for any --env value: invalid pairs
// are refused, and the built environment has each name once, the sandbox's
// own names always present, and the caller's value winning.
func FuzzEnv(f *testing.F) {
	for _, s := range []string{"FOO=bar", "PATH=/x", "A=", "=x", "NOEQ", "HOME=/root", "X=a=b", "Y=\x00", "LANG=C"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, kv string) {
		err := checkEnv(kv)
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			if err == nil {
				t.Fatalf("checkEnv(%q) accepted an invalid pair", kv)
			}
			return
		}
		if err != nil {
			t.Fatalf("checkEnv(%q): %v", kv, err)
		}
		env := buildEnv(&Spec{Env: []string{kv}})
		seen := map[string]string{}
		for _, e := range env {
			name, val, _ := strings.Cut(e, "=")
			if _, dup := seen[name]; dup {
				t.Fatalf("%q appears twice in %q", name, env)
			}
			seen[name] = val
		}
		if seen[k] != v {
			t.Fatalf("%s=%q, want %q (env %q)", k, seen[k], v, env)
		}
		for _, must := range []string{"PATH", "HOME", "USER", "LANG"} {
			if _, ok := seen[must]; !ok {
				t.Fatalf("%s missing from %q", must, env)
			}
		}
	})
}
