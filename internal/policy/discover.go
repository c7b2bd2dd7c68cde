package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// This file is the only part of the package that performs I/O: it reads
// the package clients' own configuration so that the npm, go and apt
// presets never need registry host names written anywhere.

// CommandRunner runs a command and returns its standard output.
type CommandRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Discovery finds preset parameters on this machine.
type Discovery struct {
	// Run runs client commands; nil means os/exec with a clean stdin.
	Run CommandRunner
	// AptDir is apt's configuration directory; empty means /etc/apt.
	AptDir string
	// Timeout bounds each command; zero means 10 seconds.
	Timeout time.Duration
}

// DiscoverPresetParams finds the parameters of the npm, go and apt presets
// from `npm config get registry`, `go env GOPROXY GOSUMDB` and the apt
// sources under /etc/apt. A client that is not installed or configured
// contributes nothing; the returned error lists the sources that failed
// for another reason (the parameters found are returned even then).
func DiscoverPresetParams(ctx context.Context) (map[string]string, error) {
	return Discovery{}.Discover(ctx)
}

// Discover is DiscoverPresetParams with d's runner and paths.
func (d Discovery) Discover(ctx context.Context) (map[string]string, error) {
	run := d.Run
	if run == nil {
		run = execRunner
	}
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	runT := func(name string, args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := run(cctx, name, args...)
		return string(out), err
	}
	params := map[string]string{}
	var errs []error
	if out, err := runT("npm", "config", "get", "registry"); err == nil {
		out = strings.TrimSpace(out)
		if out != "" && out != "undefined" && out != "null" {
			params["npm.registry"] = out
		}
	} else if !notInstalled(err) {
		errs = append(errs, fmt.Errorf("npm config get registry: %w", err))
	}
	if out, err := runT("go", "env", "GOPROXY", "GOSUMDB"); err == nil {
		// One line per variable, in order; an unset one is an empty line.
		lines := strings.Split(strings.TrimRight(out, "\r\n"), "\n")
		if len(lines) >= 1 && strings.TrimSpace(lines[0]) != "" {
			params["go.proxy"] = strings.TrimSpace(lines[0])
		}
		if len(lines) >= 2 && strings.TrimSpace(lines[1]) != "" {
			params["go.sumdb"] = strings.TrimSpace(lines[1])
		}
	} else if !notInstalled(err) {
		errs = append(errs, fmt.Errorf("go env GOPROXY GOSUMDB: %w", err))
	}
	aptDir := d.AptDir
	if aptDir == "" {
		aptDir = "/etc/apt"
	}
	uris, err := aptSourceURIs(aptDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("apt sources: %w", err))
	}
	if len(uris) > 0 {
		params["apt.sources"] = strings.Join(uris, " ")
	}
	if err := ctx.Err(); err != nil {
		return params, err
	}
	return params, errors.Join(errs...)
}

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && stderr.Len() > 0 {
		return out, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, err
}

func notInstalled(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)
}

// aptSourceURIs returns the sorted, deduplicated http(s) URIs of the
// enabled one-line (.list) and deb822 (.sources) apt sources under dir.
func aptSourceURIs(dir string) ([]string, error) {
	files := []string{filepath.Join(dir, "sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, err := filepath.Glob(filepath.Join(dir, "sources.list.d", pat))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	seen := map[string]bool{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var uris []string
		if strings.HasSuffix(f, ".sources") {
			uris = deb822URIs(data)
		} else {
			uris = oneLineURIs(data)
		}
		for _, u := range uris {
			if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
				seen[u] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, errors.Join(errs...)
}

// oneLineURIs parses "deb [options] URI suite [component...]" lines.
func oneLineURIs(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "deb" && f[0] != "deb-src") {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// deb822URIs parses deb822 stanzas, returning the URIs of enabled ones.
func deb822URIs(data []byte) []string {
	var out []string
	var uris []string
	enabled := true
	flush := func() {
		if enabled {
			out = append(out, uris...)
		}
		uris, enabled = nil, true
	}
	field := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			flush()
			field = ""
			continue
		}
		if line[0] == ' ' || line[0] == '\t' { // continuation
			if field == "uris" {
				uris = append(uris, strings.Fields(line)...)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		field = strings.ToLower(strings.TrimSpace(k))
		switch field {
		case "uris":
			uris = append(uris, strings.Fields(v)...)
		case "enabled":
			enabled = !strings.EqualFold(strings.TrimSpace(v), "no")
		}
	}
	flush()
	return out
}
