// Package cgroup puts one sandbox in a control group of its own with memory
// (including swap), pids and CPU limits, on cgroup v2 or v1, and removes it
// again. It does nothing else: no namespaces, no process management beyond
// killing what is left in the group when it is destroyed.
//
// Layout. Memory and pids are always required; cpu only when a CPU limit
// is set. On cgroup v2 (a unified hierarchy offering the needed
// controllers) a group is <v2 mount>/clawcage/<name>, with the
// controllers enabled on the way down (the root is exempt from the
// no-internal-processes rule; a non-root cgroup holding our own process is
// not). On cgroup v1 (or a hybrid host whose controllers are bound to v1,
// like this project's CI machine) a group is <controller mount>/<our own
// cgroup>/clawcage/<name> in each of the memory, pids and cpu hierarchies,
// so the limits of the cgroup the caller runs in still apply above it.
package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/clawcage/clawcage/internal/mountinfo"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits are a group's resource limits; zero means no limit.
type Limits struct {
	// Memory is the memory limit in bytes; swap is limited to the same
	// total (v1 memory.memsw) or forbidden (v2 memory.swap.max 0) where the
	// kernel accounts swap.
	Memory int64
	// Pids is the maximum number of tasks.
	Pids int64
	// CPU is the number of CPUs' worth of time per period (1.5 = one and a
	// half cores).
	CPU float64
}

// Stats are a group's counters.
type Stats struct {
	// OOMKills is how many processes the kernel's OOM killer killed in the
	// group because of its memory limit.
	OOMKills int64
	// MemoryPeak is the highest memory use in bytes.
	MemoryPeak int64
	// MemoryCurrent is the memory use in bytes now (memory.current on v2,
	// memory.usage_in_bytes on v1; page cache included).
	MemoryCurrent int64
	// Pids is the number of tasks in the group now.
	Pids int64
}

// Version is the cgroup version a Group uses.
type Version int

// The cgroup versions.
const (
	V1 Version = 1
	V2 Version = 2
)

// controllers are the controllers a group may use; memory and pids are
// always required, cpu only for a CPU limit.
var controllers = []string{"memory", "pids", "cpu"}

// needed returns the controllers limits l requires.
func needed(l Limits) []string {
	if l.CPU > 0 {
		return controllers
	}
	return controllers[:2]
}

// cpuPeriod is the CFS period in microseconds.
const cpuPeriod = 100000

// Group is one sandbox's cgroup (one directory on v2, one per controller on
// v1). It is safe for use by one goroutine at a time.
type Group struct {
	name    string
	version Version
	// dirs maps a controller to the group's directory; on v2 every
	// controller maps to the same directory.
	dirs map[string]string
	// bases are the clawcage directories of every hierarchy New found
	// (the needed controllers' and cpu's, if mounted), for RemoveStale.
	bases []string
}

// New creates the group name with limits l. It fails, naming the missing
// controller and how to get it, when a limit cannot be enforced; it never
// creates a group that enforces less than asked.
func New(ctx context.Context, name string, l Limits) (*Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validName(name) {
		return nil, fmt.Errorf("cgroup name %q: only letters, digits, '.', '_' and '-' (at most 128)", name)
	}
	if l.Memory < 0 || l.Pids < 0 || l.CPU < 0 || math.IsNaN(l.CPU) || math.IsInf(l.CPU, 0) {
		return nil, fmt.Errorf("cgroup %s: negative or invalid limit %+v", name, l)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup: read mountinfo: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroup: read /proc/self/cgroup: %w", err)
	}
	need := needed(l)
	h, err := detect(string(mounts), string(self), readControllers, need)
	if err != nil {
		return nil, err
	}
	g := &Group{name: name, version: h.version, dirs: map[string]string{}, bases: h.bases()}
	if h.version == V2 {
		if err := enableV2(h.v2Mount, filepath.Join(h.v2Mount, "clawcage"), need); err != nil {
			return nil, err
		}
		dir := filepath.Join(h.v2Mount, "clawcage", name)
		if err := mkGroupDir(dir); err != nil {
			return nil, err
		}
		for _, c := range need {
			g.dirs[c] = dir
		}
	} else {
		for _, c := range need {
			dir := filepath.Join(h.v1Dirs[c], "clawcage", name)
			if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
				return nil, fmt.Errorf("cgroup %s: create %s: %w", name, filepath.Dir(dir), err)
			}
			if err := mkGroupDir(dir); err != nil {
				g.Destroy()
				return nil, err
			}
			g.dirs[c] = dir
		}
	}
	if err := g.setLimits(l); err != nil {
		g.Destroy()
		return nil, err
	}
	return g, nil
}

// mkGroupDir creates dir. A leftover directory of the same name (its
// sandbox's launcher was killed before it could remove it) is reused only
// if no process is in it.
func mkGroupDir(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		if p := procs(dir); len(p) > 0 {
			return fmt.Errorf("cgroup %s already exists with processes %v in it (another sandbox of that name is running)", dir, p)
		}
		if rerr := os.Remove(dir); rerr != nil {
			return fmt.Errorf("cgroup %s already exists and cannot be removed: %w", dir, rerr)
		}
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return fmt.Errorf("cgroup: create %s: %w", dir, err)
	}
	return nil
}

// RemoveStale removes the empty groups whose name isStale says is stale,
// in every hierarchy New would use: the leftovers of launchers that were
// killed before they could call Destroy. A group with processes in it is
// never removed.
func RemoveStale(isStale func(name string) bool) error {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("cgroup: read mountinfo: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("cgroup: read /proc/self/cgroup: %w", err)
	}
	h, err := detect(string(mounts), string(self), readControllers, controllers)
	if err != nil {
		// No cpu controller: groups never used one.
		if h, err = detect(string(mounts), string(self), readControllers, controllers[:2]); err != nil {
			return err
		}
	}
	return removeStaleIn(h.bases(), isStale, "")
}

// RemoveStale is the package's RemoveStale in the hierarchies New found for
// g, without reading the mount table again; it never touches g itself.
func (g *Group) RemoveStale(isStale func(name string) bool) error {
	return removeStaleIn(g.bases, isStale, g.name)
}

// removeStaleIn removes the empty groups under bases whose name isStale
// says is stale, except skip.
func removeStaleIn(bases []string, isStale func(name string) bool, skip string) error {
	var errs []error
	for _, base := range bases {
		ents, err := os.ReadDir(base)
		if err != nil {
			continue
		}
		for _, e := range ents {
			dir := filepath.Join(base, e.Name())
			if !e.IsDir() || e.Name() == skip || !isStale(e.Name()) || len(procs(dir)) > 0 {
				continue
			}
			if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.EBUSY) {
				errs = append(errs, fmt.Errorf("cgroup: remove stale %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Version returns the cgroup version the group uses.
func (g *Group) Version() Version { return g.version }

// Dir returns the group's directory for controller ("memory", "pids",
// "cpu"); on v2 all are the same.
func (g *Group) Dir(controller string) string { return g.dirs[controller] }

// setLimits writes l into the group's files.
func (g *Group) setLimits(l Limits) error {
	type setting struct{ controller, file, value string }
	var s []setting
	if g.version == V2 {
		if l.Memory > 0 {
			s = append(s, setting{"memory", "memory.max", strconv.FormatInt(l.Memory, 10)})
			if g.exists("memory", "memory.swap.max") {
				s = append(s, setting{"memory", "memory.swap.max", "0"})
			}
		}
		if l.Pids > 0 {
			s = append(s, setting{"pids", "pids.max", strconv.FormatInt(l.Pids, 10)})
		}
		if l.CPU > 0 {
			s = append(s, setting{"cpu", "cpu.max", fmt.Sprintf("%d %d", cpuQuota(l.CPU), cpuPeriod)})
		}
	} else {
		if l.Memory > 0 {
			s = append(s, setting{"memory", "memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10)})
			if g.exists("memory", "memory.memsw.limit_in_bytes") {
				s = append(s, setting{"memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(l.Memory, 10)})
			}
		}
		if l.Pids > 0 {
			s = append(s, setting{"pids", "pids.max", strconv.FormatInt(l.Pids, 10)})
		}
		if l.CPU > 0 {
			s = append(s,
				setting{"cpu", "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)},
				setting{"cpu", "cpu.cfs_quota_us", strconv.FormatInt(cpuQuota(l.CPU), 10)})
		}
	}
	for _, x := range s {
		if err := g.write(x.controller, x.file, x.value); err != nil {
			return err
		}
	}
	return nil
}

// cpuQuota is the CFS quota in microseconds per cpuPeriod for cpus CPUs
// (at least 1ms, the kernel's minimum).
func cpuQuota(cpus float64) int64 {
	return max(int64(math.Round(cpus*cpuPeriod)), 1000)
}

func (g *Group) exists(controller, file string) bool {
	_, err := os.Stat(filepath.Join(g.dirs[controller], file))
	return err == nil
}

func (g *Group) write(controller, file, value string) error {
	p := filepath.Join(g.dirs[controller], file)
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup %s: set %s to %s: %w", g.name, p, value, err)
	}
	return nil
}

// AddProcess moves pid (all its threads) into the group.
func (g *Group) AddProcess(pid int) error {
	done := map[string]bool{}
	for _, c := range controllers {
		dir, ok := g.dirs[c]
		if !ok || done[dir] {
			continue
		}
		done[dir] = true
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup %s: add process %d to %s: %w", g.name, pid, dir, err)
		}
	}
	return nil
}

// Stats reads the group's counters.
func (g *Group) Stats() (Stats, error) {
	var st Stats
	var err error
	if g.version == V2 {
		if st.OOMKills, err = keyedValue(filepath.Join(g.dirs["memory"], "memory.events"), "oom_kill"); err != nil {
			return st, err
		}
		if st.MemoryPeak, err = readInt(filepath.Join(g.dirs["memory"], "memory.peak")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return st, err
		}
		if st.MemoryCurrent, err = readInt(filepath.Join(g.dirs["memory"], "memory.current")); err != nil {
			return st, err
		}
	} else {
		if st.OOMKills, err = keyedValue(filepath.Join(g.dirs["memory"], "memory.oom_control"), "oom_kill"); err != nil {
			return st, err
		}
		if st.MemoryPeak, err = readInt(filepath.Join(g.dirs["memory"], "memory.max_usage_in_bytes")); err != nil {
			return st, err
		}
		if st.MemoryCurrent, err = readInt(filepath.Join(g.dirs["memory"], "memory.usage_in_bytes")); err != nil {
			return st, err
		}
	}
	st.Pids, err = readInt(filepath.Join(g.dirs["pids"], "pids.current"))
	return st, err
}

// Destroy kills every process left in the group and removes it. It waits up
// to 5 seconds for the processes to go.
func (g *Group) Destroy() error {
	deadline := time.Now().Add(5 * time.Second)
	var errs []error
	seen := map[string]bool{}
	for _, c := range controllers {
		dir, ok := g.dirs[c]
		if !ok || seen[dir] {
			continue
		}
		seen[dir] = true
		if err := destroyDir(dir, g.version, deadline); err != nil {
			errs = append(errs, fmt.Errorf("cgroup %s: %w", g.name, err))
		}
	}
	return errors.Join(errs...)
}

// destroyDir empties dir of processes and removes it.
func destroyDir(dir string, v Version, deadline time.Time) error {
	if v == V2 {
		// cgroup.kill (Linux 5.14) kills the whole subtree at once.
		os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	}
	for wait := time.Millisecond; ; wait = min(wait*2, 50*time.Millisecond) {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		for _, pid := range procs(dir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove %s: processes %v still in it", dir, procs(dir))
		}
		time.Sleep(wait)
	}
}

// procs lists the pids in dir's cgroup.procs.
func procs(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// hierarchy is what detect found.
type hierarchy struct {
	version Version
	v2Mount string
	// v1Dirs maps a controller to our own cgroup's directory in its v1
	// hierarchy: the needed ones, and the others of controllers that
	// are mounted.
	v1Dirs map[string]string
}

// bases returns the clawcage directories groups are created in.
func (h *hierarchy) bases() []string {
	if h.version == V2 {
		return []string{filepath.Join(h.v2Mount, "clawcage")}
	}
	var bases []string
	for _, c := range controllers {
		if dir, ok := h.v1Dirs[c]; ok {
			bases = append(bases, filepath.Join(dir, "clawcage"))
		}
	}
	return bases
}

// detect picks v2 when a cgroup2 mount offers every needed controller,
// else v1 when every needed controller has a v1 hierarchy, else fails
// naming what is missing. readCtl reads a v2 mount's cgroup.controllers.
func detect(mountTable, selfCgroup string, readCtl func(mount string) ([]string, error), need []string) (*hierarchy, error) {
	type v1mount struct{ root, point string }
	var v2Mounts []string
	v1 := map[string]v1mount{}
	for _, line := range strings.Split(mountTable, "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 5 || len(f) < sep+4 {
			continue
		}
		root, point, fstype, super := mountinfo.Unescape(f[3]), mountinfo.Unescape(f[4]), f[sep+1], f[sep+3]
		switch fstype {
		case "cgroup2":
			v2Mounts = append(v2Mounts, point)
		case "cgroup":
			for _, opt := range strings.Split(super, ",") {
				if slices.Contains(controllers, opt) {
					if _, dup := v1[opt]; !dup {
						v1[opt] = v1mount{root, point}
					}
				}
			}
		}
	}
	var v2Missing []string
	for _, m := range v2Mounts {
		have, err := readCtl(m)
		if err != nil {
			continue
		}
		v2Missing = nil
		for _, c := range need {
			if !slices.Contains(have, c) {
				v2Missing = append(v2Missing, c)
			}
		}
		if len(v2Missing) == 0 {
			return &hierarchy{version: V2, v2Mount: m}, nil
		}
	}
	own := map[string]string{} // v1 controller -> our cgroup path
	for _, line := range strings.Split(selfCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	h := &hierarchy{version: V1, v1Dirs: map[string]string{}}
	var missing []string
	for _, c := range controllers {
		m, ok := v1[c]
		if !ok {
			if slices.Contains(need, c) {
				missing = append(missing, c)
			}
			continue
		}
		rel := own[c]
		// Our path is relative to the hierarchy's root; the mount shows the
		// subtree below m.root.
		if m.root != "/" {
			rel = strings.TrimPrefix(rel, m.root)
		}
		h.v1Dirs[c] = filepath.Join(m.point, filepath.Clean("/"+rel))
	}
	if len(missing) == 0 {
		return h, nil
	}
	switch {
	case len(v2Mounts) == 0 && len(v1) == 0:
		return nil, errors.New("cgroup: no cgroup file system is mounted; fix: mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)")
	case len(v2Mounts) > 0 && len(v1) == 0:
		return nil, fmt.Errorf("cgroup: the cgroup v2 hierarchy does not offer the %s controller(s) and no v1 hierarchy does; fix: enable them (they are bound to no hierarchy, or the kernel lacks CONFIG_MEMCG/CONFIG_CGROUP_PIDS/CONFIG_CGROUP_SCHED)", strings.Join(v2Missing, ", "))
	default:
		return nil, fmt.Errorf("cgroup: no hierarchy offers the %s controller(s) (v1 mounts: %d, v2 mounts: %d); fix: mount them (mount -t cgroup -o %s none /sys/fs/cgroup/%s) or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)", strings.Join(missing, ", "), len(v1), len(v2Mounts), missing[0], missing[0])
	}
}

// enableV2 enables the controllers in mount's and base's subtree_control
// and creates base.
func enableV2(mount, base string, need []string) error {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("cgroup: create %s: %w", base, err)
	}
	for _, dir := range []string{mount, base} {
		have, err := readControllers(dir)
		if err != nil {
			return err
		}
		enabled, err := readWords(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		var add []string
		for _, c := range need {
			if !slices.Contains(have, c) {
				return fmt.Errorf("cgroup: %s does not offer the %s controller; fix: enable it in the parent's cgroup.subtree_control", dir, c)
			}
			if !slices.Contains(enabled, c) {
				add = append(add, "+"+c)
			}
		}
		if len(add) == 0 {
			continue
		}
		p := filepath.Join(dir, "cgroup.subtree_control")
		if err := os.WriteFile(p, []byte(strings.Join(add, " ")), 0); err != nil {
			return fmt.Errorf("cgroup: enable %s in %s: %w (a cgroup holding processes cannot delegate controllers; run clawcage in the root cgroup or a delegated one)", strings.Join(add, " "), p, err)
		}
	}
	return nil
}

// readControllers reads dir's cgroup.controllers.
func readControllers(dir string) ([]string, error) {
	w, err := readWords(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return w, nil
}

func readWords(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return math.MaxInt64, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, s)
	}
	return n, nil
}

// keyedValue reads "key value" lines (memory.events, memory.oom_control)
// and returns key's value (0 if absent: older kernels lack oom_kill).
func keyedValue(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %q is not a number", path, key, v)
			}
			return n, nil
		}
	}
	return 0, sc.Err()
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
