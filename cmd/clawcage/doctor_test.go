package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/kernel"
)

func syntheticReport(mutate func(*kernel.Report)) kernel.Report {
	r := kernel.Report{
		Kernel: "6.18.0-test", Arch: "x86_64", LandlockABI: 7,
		Cgroups: kernel.Cgroups{Version: "v2", V2Mount: "/sys/fs/cgroup", Controllers: map[string]string{"memory": "v2:/sys/fs/cgroup", "pids": "v2:/sys/fs/cgroup"}},
		Features: []kernel.Feature{
			{Name: kernel.Landlock, OK: true, Required: true, Detail: "ABI 7: filesystem"},
			{Name: kernel.Seccomp, OK: true, Required: true, Detail: "filters"},
			{Name: kernel.UserNS, OK: true, Required: true, Detail: "created one"},
			{Name: kernel.NetNS, OK: true, Required: true, Detail: "created one"},
			{Name: kernel.CgroupMemory, OK: true, Required: true, Detail: "memory controller on cgroup v2"},
			{Name: kernel.CgroupPids, OK: true, Required: true, Detail: "pids controller on cgroup v2"},
			{Name: kernel.Nftables, OK: true, Detail: "nf_tables answers"},
		},
	}
	if mutate != nil {
		mutate(&r)
	}
	return r
}

func setFeature(name string, f kernel.Feature) func(*kernel.Report) {
	return func(r *kernel.Report) {
		for i := range r.Features {
			if r.Features[i].Name == name {
				f.Name, f.Required = name, r.Features[i].Required
				r.Features[i] = f
			}
		}
	}
}

func TestDoctorRendering(t *testing.T) {
	landlockOff := setFeature(kernel.Landlock, kernel.Feature{Detail: "Landlock is built in but not enabled at boot", Fix: "add landlock to the lsm= kernel parameter"})
	cases := []struct {
		name     string
		report   kernel.Report
		wantExit int // 0: no error
		want     []string
		notWant  []string
	}{
		{"everything present", syntheticReport(nil), 0,
			[]string{"kernel 6.18.0-test (x86_64), Landlock ABI 7, cgroups v2", "FEATURE", "landlock", "ok", "ok (optional)  nf_tables answers", "sandboxes can be enforced"},
			[]string{"MISSING", "fix:", "CANNOT"}},
		{"landlock disabled at boot refuses", syntheticReport(landlockOff), 1,
			[]string{"landlock", "MISSING", "not enabled at boot", "fix: add landlock to the lsm= kernel parameter", "sandboxes CANNOT be enforced: 1 required feature(s) missing"},
			[]string{"sandboxes can be enforced\n"}},
		{"no pids controller and no userns refuse", syntheticReport(func(r *kernel.Report) {
			setFeature(kernel.CgroupPids, kernel.Feature{Detail: "no v1 hierarchy has the pids controller", Fix: "mount -t cgroup -o pids"})(r)
			setFeature(kernel.UserNS, kernel.Feature{Detail: "user.max_user_namespaces is 0", Fix: "sysctl -w user.max_user_namespaces=15000"})(r)
		}), 1,
			[]string{"cgroup-pids", "fix: mount -t cgroup -o pids", "fix: sysctl -w user.max_user_namespaces=15000", "2 required feature(s) missing"}, nil},
		{"optional nftables absent still enforceable", syntheticReport(setFeature(kernel.Nftables, kernel.Feature{Detail: "no nf_tables", Fix: "modprobe nf_tables"})), 0,
			[]string{"nftables", "absent (optional)", "fix: modprobe nf_tables", "sandboxes can be enforced"}, []string{"MISSING"}},
		{"empty report fields say unknown", kernel.Report{}, 0, []string{"kernel unknown (unknown), Landlock ABI 0, cgroups unknown"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := runDoctor(&buf, tc.report, false)
			checkExit(t, err, tc.wantExit)
			out := buf.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}

			buf.Reset()
			err = runDoctor(&buf, tc.report, true)
			checkExit(t, err, tc.wantExit)
			var got struct {
				Kernel      string           `json:"kernel"`
				Enforceable bool             `json:"enforceable"`
				Problem     string           `json:"problem"`
				Features    []kernel.Feature `json:"features"`
			}
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("--json output is not JSON: %v\n%s", err, buf.String())
			}
			if got.Enforceable != (tc.wantExit == 0) || (got.Problem == "") != (tc.wantExit == 0) {
				t.Errorf("json enforceable=%v problem=%q, want enforceable=%v", got.Enforceable, got.Problem, tc.wantExit == 0)
			}
			if got.Kernel != tc.report.Kernel || len(got.Features) != len(tc.report.Features) {
				t.Errorf("json kernel %q with %d features, want %q with %d", got.Kernel, len(got.Features), tc.report.Kernel, len(tc.report.Features))
			}
		})
	}
}

func checkExit(t *testing.T, err error, want int) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("doctor returned %v, want success", err)
		}
		return
	}
	var ec exitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != want {
		t.Fatalf("doctor returned %v, want exit status %d", err, want)
	}
}

// TestDoctorCommandThisMachine runs `clawcage doctor --json` on the CI
// machine, which can enforce sandboxes.
func TestDoctorCommandThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("doctor's namespace probes need root; not root")
	}
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"doctor", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("clawcage doctor --json: %v\n%s", err, out.String())
	}
	var got struct {
		LandlockABI int  `json:"landlock_abi"`
		Enforceable bool `json:"enforceable"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if got.LandlockABI < 1 || !got.Enforceable {
		t.Errorf("landlock_abi=%d enforceable=%v, want >= 1 and true:\n%s", got.LandlockABI, got.Enforceable, out.String())
	}
}
