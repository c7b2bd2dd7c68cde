package vaulttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ProcFinding is one place a secret was found in a running process.
type ProcFinding struct {
	// Where is "environ", "cmdline" or "mem START-END PERMS PATH".
	Where string
	Finding
}

// maxScan bounds how much process memory ScanProcess reads.
const maxScan = 2 << 30

// ScanProcess searches a live process for secret: its environment, its
// command line and every readable memory mapping (through /proc/PID/mem,
// which needs ptrace access: root, or the same uid with a permissive
// Yama setting). It is how a test proves that a key never entered a
// sandboxed agent's memory. The process is not stopped, so memory is read
// as it changes; a find is real, an absence is as of the scan.
func ScanProcess(pid int, secret []byte) ([]ProcFinding, error) {
	if len(secret) == 0 {
		return nil, errors.New("scan process: empty secret")
	}
	base := fmt.Sprintf("/proc/%d", pid)
	var out []ProcFinding
	for _, name := range []string{"environ", "cmdline"} {
		data, err := os.ReadFile(base + "/" + name)
		if err != nil {
			return nil, fmt.Errorf("scan process %d: %w", pid, err)
		}
		for _, f := range ScanBytes(data, secret) {
			out = append(out, ProcFinding{Where: name, Finding: f})
		}
	}
	maps, err := os.Open(base + "/maps")
	if err != nil {
		return nil, fmt.Errorf("scan process %d: %w", pid, err)
	}
	defer maps.Close()
	mem, err := os.Open(base + "/mem")
	if err != nil {
		return nil, fmt.Errorf("scan process %d: open memory: %w", pid, err)
	}
	defer mem.Close()

	ns := needles(secret)
	longest := 0
	for _, n := range ns {
		longest = max(longest, len(n.b))
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk+longest)
	var scanned int64
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[1][0] != 'r' {
			continue
		}
		if strings.HasSuffix(line, "[vvar]") || strings.HasSuffix(line, "[vvar_vclock]") {
			continue // reading vvar pages can fault
		}
		start, end, ok := parseRange(fields[0])
		if !ok {
			continue
		}
		where := "mem " + strings.Join(fields[:2], " ")
		if len(fields) >= 6 {
			where += " " + fields[5]
		}
		// Read the region in chunks that overlap by the longest needle.
		carry := 0
		for off := start; off < end; off += chunk {
			n := min(uint64(chunk), end-off)
			if scanned += int64(n); scanned > maxScan {
				return out, fmt.Errorf("scan process %d: more than %d bytes of memory; scanned a prefix", pid, maxScan)
			}
			m, err := mem.ReadAt(buf[carry:carry+int(n)], int64(off))
			if err != nil && !errors.Is(err, io.EOF) && m == 0 {
				break // unreadable (e.g. a guard page or I/O mapping): skip the rest of the region
			}
			data := buf[:carry+m]
			for _, nd := range ns {
				for i := 0; ; {
					j := bytes.Index(data[i:], nd.b)
					if j < 0 {
						break
					}
					// Skip matches wholly inside the carried-over prefix: already reported.
					if i+j+len(nd.b) > carry {
						addr := int64(off) - int64(carry) + int64(i+j)
						out = append(out, ProcFinding{Where: where, Finding: Finding{Encoding: nd.encoding, Offset: int(addr)}})
					}
					i += j + 1
				}
			}
			carry = min(longest-1, len(data))
			copy(buf, data[len(data)-carry:])
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("scan process %d: read maps: %w", pid, err)
	}
	return out, nil
}

func parseRange(s string) (start, end uint64, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseUint(a, 16, 64)
	end, err2 := strconv.ParseUint(b, 16, 64)
	return start, end, err1 == nil && err2 == nil && end > start
}

// AssertNotInProcess fails t if secret is found in the environment,
// command line or memory of process pid (see ScanProcess). Failures name
// the place and the address, never the secret.
func AssertNotInProcess(t testing.TB, secret []byte, pid int) {
	t.Helper()
	found, err := ScanProcess(pid, secret)
	if err != nil {
		t.Errorf("AssertNotInProcess(%d): %v", pid, err)
	}
	for _, f := range found {
		t.Errorf("canary secret found in process %d %s: %s-encoded at %#x", pid, f.Where, f.Encoding, f.Offset)
	}
}
