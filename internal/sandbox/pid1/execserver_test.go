package pid1

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckExecRequest(t *testing.T) {
	tests := []struct {
		name string
		req  ExecRequest
		want string // "" accepted
	}{
		{"plain command as the sandbox user", ExecRequest{Argv: []string{"id"}, UID: UserUID}, ""},
		{"root with env and dir", ExecRequest{Argv: []string{"sh", "-c", "x"}, Env: []string{"A=b=c"}, Dir: "/tmp"}, ""},
		{"no argv", ExecRequest{UID: UserUID}, "no command"},
		{"empty argv[0]", ExecRequest{Argv: []string{""}, UID: UserUID}, "no command"},
		{"uid outside 0 and 1000: host asks for another identity", ExecRequest{Argv: []string{"id"}, UID: 65534}, "uid 65534"},
		{"relative working directory", ExecRequest{Argv: []string{"id"}, UID: UserUID, Dir: "tmp"}, "not absolute"},
		{"NUL smuggled into an argument", ExecRequest{Argv: []string{"sh", "-c\x00rm"}, UID: UserUID}, "NUL"},
		{"NUL in the environment", ExecRequest{Argv: []string{"id"}, UID: UserUID, Env: []string{"A=b\x00LD_PRELOAD=x"}}, "NUL"},
		{"NUL in the directory", ExecRequest{Argv: []string{"id"}, UID: UserUID, Dir: "/tmp\x00/x"}, "NUL"},
		{"environment without =", ExecRequest{Argv: []string{"id"}, UID: UserUID, Env: []string{"PATH"}}, "want KEY=VALUE"},
		{"environment with an empty name", ExecRequest{Argv: []string{"id"}, UID: UserUID, Env: []string{"=x"}}, "want KEY=VALUE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkExecRequest(&tc.req)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("checkExecRequest: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMergeExecEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "HOME=/sandbox", "USER=sandbox", "LOGNAME=sandbox", "AGENT=1"}
	tests := []struct {
		name string
		req  ExecRequest
		want []string
	}{
		{"sandbox user keeps the sandbox's environment", ExecRequest{UID: UserUID}, base},
		{"root is USER=root", ExecRequest{UID: 0}, []string{"PATH=/usr/bin", "HOME=/sandbox", "USER=root", "LOGNAME=root", "AGENT=1"}},
		{"--env overrides and adds, later wins", ExecRequest{UID: UserUID, Env: []string{"AGENT=2", "NEW=x", "NEW=y", "USER=me"}},
			[]string{"PATH=/usr/bin", "HOME=/sandbox", "USER=me", "LOGNAME=sandbox", "AGENT=2", "NEW=y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeExecEnv(base, &tc.req)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// FuzzExecRequest: whatever bytes arrive as a request, an accepted one
// names a command, one of the two identities, an absolute directory and
// clean KEY=VALUE pairs, and its environment has each name once.
func FuzzExecRequest(f *testing.F) {
	for _, s := range []string{
		`{"argv":["id"],"uid":1000}`,
		`{"argv":["sh","-c","exit 7"],"env":["A=1","A=2"],"uid":0,"dir":"/tmp","tty":true}`,
		`{"argv":[""],"uid":1000}`,
		`{"argv":["id"],"uid":1001}`,
		`{"argv":["id"],"uid":-1}`,
		`{"argv":["id"],"uid":1000,"dir":"rel"}`,
		`{"argv":["id\u0000x"],"uid":1000}`,
		`{"argv":["id"],"uid":1000,"env":["NOEQ","=v"]}`,
		`{"argv":null}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	base := []string{"PATH=/usr/bin", "HOME=/sandbox", "USER=sandbox", "LOGNAME=sandbox"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r ExecRequest
		if json.Unmarshal(data, &r) != nil || checkExecRequest(&r) != nil {
			return
		}
		if len(r.Argv) == 0 || r.Argv[0] == "" || (r.UID != 0 && r.UID != UserUID) || (r.Dir != "" && r.Dir[0] != '/') {
			t.Fatalf("accepted %+v", r)
		}
		seen := map[string]bool{}
		for _, kv := range mergeExecEnv(base, &r) {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" || strings.ContainsRune(kv, 0) || seen[k] {
				t.Fatalf("environment entry %q of %+v", kv, r)
			}
			seen[k] = true
		}
	})
}
