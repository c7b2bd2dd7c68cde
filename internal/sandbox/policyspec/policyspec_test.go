package policyspec

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/sandbox"
)

func TestFrom(t *testing.T) {
	if From(nil) != nil {
		t.Error("From(nil) is not nil")
	}
	f := filepath.Join(t.TempDir(), "p.yaml")
	yaml := `filesystem:
  read_only: [/opt/data]
  read_write: [/srv/out]
resources:
  memory: 1GiB
  pids: 64
  cpu: 1.5
  tmp: 16MiB
  disk: 2G
local_ports: [8000, 8443]
`
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	want := &sandbox.Policy{
		ReadOnly:   []string{"/opt/data"},
		ReadWrite:  []string{"/srv/out"},
		Limits:     sandbox.Limits{Memory: 1 << 30, Pids: 64, CPU: 1.5, Tmp: 16 << 20, Disk: 2e9},
		LocalPorts: []int{8000, 8443},
	}
	if got := From(p); !reflect.DeepEqual(got, want) {
		t.Errorf("From = %+v, want %+v", got, want)
	}
}
