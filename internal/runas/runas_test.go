package runas

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "CLAWCAGE_RUNAS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "harden":
		// A component: harden, report, then wait to be inspected.
		if err := HardenSelf(); err != nil {
			fmt.Println("refused:", err)
			os.Exit(1)
		}
		fmt.Println("hardened")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "check":
		// A component started without a Spawner must refuse to run.
		if err := HardenSelf(); err != nil {
			fmt.Println("refused:", err)
			os.Exit(1)
		}
		fmt.Println("hardened")
		os.Exit(0)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: changes uids and capabilities")
	}
}

// helperBinary copies the test binary where an unprivileged uid can run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestForComponent(t *testing.T) {
	tests := []struct {
		name string
		uid  uint32
		ok   bool
	}{
		{"router", 61001, true},
		{"policy", 61002, true},
		{"gateway", 61003, true},
		{"supervisor", 0, false},
		{"sandbox", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		t.Run("component "+tt.name, func(t *testing.T) {
			id, err := ForComponent(tt.name)
			if (err == nil) != tt.ok || id.UID != tt.uid || id.GID != tt.uid {
				t.Errorf("ForComponent(%q) = %+v, %v; want uid %d ok=%v", tt.name, id, err, tt.uid, tt.ok)
			}
		})
	}
}

func TestCheckUnused(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nmallory:x:61002:100::/home/m:/bin/sh\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nwheel:x:61003:\n"), 0o644)
	tests := []struct {
		component string
		want      string
	}{
		{"router", ""},
		{"policy", "passwd:2: id 61002 of component policy is taken by \"mallory\""},
		{"gateway", "group:2: id 61003 of component gateway is taken by \"wheel\""},
	}
	for _, tt := range tests {
		t.Run(tt.component, func(t *testing.T) {
			id, _ := ForComponent(tt.component)
			err := checkUnused(id, passwd, group)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("checkUnused(%s) = %v, want %q", tt.component, err, tt.want)
			}
		})
	}
}

func TestPrepareStateDir(t *testing.T) {
	needRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := PrepareStateRoot(state); err != nil {
		t.Fatal(err)
	}
	id, _ := ForComponent("router")
	dir, err := PrepareStateDir(state, id)
	if err != nil {
		t.Fatal(err)
	}
	assertOwner(t, state, 0, 0o711)
	assertOwner(t, dir, id.UID, 0o700)

	// A directory left with wrong owner and mode is fixed.
	os.Chown(dir, 0, 0)
	os.Chmod(dir, 0o777)
	if _, err := PrepareStateDir(state, id); err != nil {
		t.Fatal(err)
	}
	assertOwner(t, dir, id.UID, 0o700)

	// A symlink planted in place of the directory is refused.
	pol, _ := ForComponent("policy")
	os.Symlink("/etc", filepath.Join(state, "policy"))
	if _, err := PrepareStateDir(state, pol); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symlinked state directory: err = %v, want 'not a directory'", err)
	}
	st, _ := os.Stat("/etc")
	if st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("/etc changed owner")
	}
}

func assertOwner(t *testing.T, path string, uid uint32, mode os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Sys().(*syscall.Stat_t).Uid; got != uid || st.Mode().Perm() != mode {
		t.Errorf("%s: owner %d mode %v, want %d %v", path, got, st.Mode().Perm(), uid, mode)
	}
}

func TestSpawnedComponentHasNoPrivileges(t *testing.T) {
	needRoot(t)
	bin := helperBinary(t)
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	id, _ := ForComponent("router")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{helperEnv + "=harden"}
	Configure(cmd, id)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := sp.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "hardened\n" {
		t.Fatalf("component said %q", line)
	}

	st, err := readStatus(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Uid":        "61001\t61001\t61001\t61001",
		"Gid":        "61001\t61001\t61001\t61001",
		"Groups":     "",
		"CapInh":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapEff":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"NoNewPrivs": "1",
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("/proc/PID/status %s = %q, want %q", k, st[k], v)
		}
	}
	// Non-dumpable: the kernel makes /proc/PID/* owned by root.
	var pst syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid), &pst); err != nil {
		t.Fatal(err)
	}
	if pst.Uid != 0 {
		t.Errorf("/proc/PID/status owned by %d: the component is dumpable", pst.Uid)
	}
	// Its own process group, so the supervisor can signal the whole tree.
	if pgid, _ := syscall.Getpgid(cmd.Process.Pid); pgid != cmd.Process.Pid {
		t.Errorf("pgid %d, want its own %d", pgid, cmd.Process.Pid)
	}

	// The supervisor itself keeps its privileges: only the spawner thread
	// gave them up.
	self, _ := readStatus("/proc/self/status")
	if self["CapBnd"] == "0000000000000000" || self["NoNewPrivs"] != "0" {
		t.Errorf("supervisor lost privileges: CapBnd %s NoNewPrivs %s", self["CapBnd"], self["NoNewPrivs"])
	}
}

func TestHardenSelfRefusesPrivilege(t *testing.T) {
	needRoot(t)
	bin := helperBinary(t)
	id, _ := ForComponent("policy")
	tests := []struct {
		name    string
		setup   func(cmd *exec.Cmd)
		spawner bool
		want    string
	}{
		{"started as root", func(*exec.Cmd) {}, false, "must not run as root"},
		{"uid dropped but bounding set kept", func(cmd *exec.Cmd) { Configure(cmd, id) }, false, "capability set CapBnd"},
		{"supplementary group kept", func(cmd *exec.Cmd) {
			Configure(cmd, id)
			cmd.SysProcAttr.Credential.Groups = []uint32{0}
		}, true, "supplementary groups"},
		{"all dropped", func(cmd *exec.Cmd) { Configure(cmd, id) }, true, "hardened"},
	}
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = []string{helperEnv + "=check"}
			tt.setup(cmd)
			start := cmd.Start
			if tt.spawner {
				start = func() error { return sp.Start(cmd) }
			}
			var out strings.Builder
			cmd.Stdout = &out
			if err := start(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("component said %q, want %q", out.String(), tt.want)
			}
		})
	}
}
