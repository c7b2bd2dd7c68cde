package kernel

import (
	"strings"
	"testing"
)

// FuzzParseMounts feeds arbitrary /proc/mounts text to parseMounts: it must
// not panic, must name a known version, and must place every controller in
// a v1 or v2 hierarchy it saw.
func FuzzParseMounts(f *testing.F) {
	f.Add(hybridMounts, "memory pids")
	f.Add("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "cpu io memory pids")
	f.Add(`cgroup /a\040b\ cgroup rw,memory,name=x 0 0`, "")
	f.Add("cgroup\t/x cgroup rw,release_agent=/bin/sh,pids\n\n", "pids pids")
	f.Fuzz(func(t *testing.T, mounts, v2 string) {
		cg := parseMounts(mounts, func(string) (string, error) { return v2, nil })
		switch cg.Version {
		case "v1", "v2", "hybrid", "none":
		default:
			t.Fatalf("version %q", cg.Version)
		}
		for c, where := range cg.Controllers {
			if !strings.HasPrefix(where, "v1:") && !strings.HasPrefix(where, "v2:") {
				t.Fatalf("controller %q at %q", c, where)
			}
			if strings.HasPrefix(where, "v2:") && where != "v2:"+cg.V2Mount {
				t.Fatalf("controller %q at %q, v2 mount %q", c, where, cg.V2Mount)
			}
		}
	})
}
