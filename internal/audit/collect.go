package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Collect is the inside half of the live key hunt: instead of judging in
// the sandbox (which would need the keys there), the probe gathers what an
// attacker inside could read or send — its environment, printenv, every
// visible process's environ and cmdline, every readable file, and the
// bytes of a request to inference.local with the router's answer — and
// streams it OUT as a sequence of items. The host side (internal/audit/live)
// has the router's admin socket scan the material for key bytes and judges.

// Item kinds in a collection stream.
const (
	ItemEnv      = "env"      // the probe's own environment
	ItemPrintenv = "printenv" // output of printenv run in the sandbox
	ItemEnviron  = "environ"  // /proc/PID/environ
	ItemCmdline  = "cmdline"  // /proc/PID/cmdline
	ItemFile     = "file"     // a chunk of a readable regular file
	ItemRequest  = "request"  // the bytes sent to inference.local
	ItemResponse = "response" // the bytes inference.local answered
	ItemBounded  = "bounded"  // the file scan stopped at a bound
	ItemEnd      = "end"      // the stream is complete
)

// Item is one piece of collected material. Its header is one JSON line;
// Size bytes of data follow.
type Item struct {
	Kind string `json:"kind"`
	// Name says where the material came from (a path, a pid's file, a URL).
	Name string `json:"name"`
	// Size is the number of data bytes following the header.
	Size int64 `json:"size"`
	// Offset is a file chunk's offset in its file.
	Offset int64 `json:"offset,omitempty"`
	// Err is why the material could not be read (an errno name), in
	// which case Size is 0.
	Err string `json:"err,omitempty"`
	// Meta carries facts about the item (HTTP status, counts).
	Meta map[string]string `json:"meta,omitempty"`
}

// Bounds of a collection stream, enforced by the writer and checked again
// by the reader (which must not trust what comes out of a sandbox).
const (
	// MaxItemData bounds one item's data.
	MaxItemData = 4 << 20
	// chunkOverlap is repeated at the start of a file's next chunk, so a
	// key (at most 16 KiB, its hex form 32 KiB) spanning a chunk border
	// is whole in one of them.
	chunkOverlap = 64 << 10
	maxHeader    = 64 << 10
	// DefaultCollectBytes bounds the file bytes one collection streams.
	DefaultCollectBytes = 1 << 30
	collectTime         = 120 * time.Second
)

// HostSystemDirs are the host's read-only system directories bound into
// every sandbox. They are the host's own files, the same for every
// sandbox and too large to stream; the scan leaves them out and says so.
var HostSystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// CollectOptions say what to collect.
type CollectOptions struct {
	// Roots are the directories whose files are collected ("/" when empty).
	Roots []string
	// Skip are paths not descended into (besides /proc, /sys, /dev).
	Skip []string
	// MaxBytes bounds the file bytes (DefaultCollectBytes when 0).
	MaxBytes int64
	// InferenceURL is fetched with an SDK-like client ("" skips it).
	InferenceURL string
	// CompletionURL, when set, gets a one-token chat completion
	// (completionBody) the router forwards to a provider.
	CompletionURL string
}

// ParseCollectArgs reads `collect` arguments: --max BYTES, --skip PATH,
// --inference URL, --completion URL, then roots.
func ParseCollectArgs(args []string) (CollectOptions, error) {
	var o CollectOptions
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			o.Roots = append(o.Roots, a)
			continue
		}
		if i+1 >= len(args) {
			return o, fmt.Errorf("collect: %s needs a value", a)
		}
		v := args[i+1]
		i++
		switch a {
		case "--max":
			n, err := parseSize(v)
			if err != nil {
				return o, fmt.Errorf("collect --max: %w", err)
			}
			o.MaxBytes = n
		case "--skip":
			o.Skip = append(o.Skip, v)
		case "--inference":
			o.InferenceURL = v
		case "--completion":
			o.CompletionURL = v
		default:
			return o, fmt.Errorf("collect: unknown flag %s", a)
		}
	}
	return o, nil
}

// ItemWriter writes a collection stream.
type ItemWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// NewItemWriter writes items to w.
func NewItemWriter(w io.Writer) *ItemWriter { return &ItemWriter{w: bufio.NewWriterSize(w, 256<<10)} }

// Write writes one item with data (truncated to MaxItemData).
func (iw *ItemWriter) Write(it Item, data []byte) error {
	if len(data) > MaxItemData {
		data = data[:MaxItemData]
		if it.Meta == nil {
			it.Meta = map[string]string{}
		}
		it.Meta["truncated"] = "true"
	}
	it.Size = int64(len(data))
	hdr, err := json.Marshal(it)
	if err != nil {
		return err
	}
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if _, err := iw.w.Write(append(hdr, '\n')); err != nil {
		return err
	}
	if _, err := iw.w.Write(data); err != nil {
		return err
	}
	return nil
}

// Flush flushes buffered items.
func (iw *ItemWriter) Flush() error {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	return iw.w.Flush()
}

// ReadItems reads a collection stream, calling fn for every item until the
// end item. A stream without an end item, or with an item over the bounds,
// is an error: it was cut short or did not come from the probe.
func ReadItems(r io.Reader, fn func(Item, []byte) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("collection stream ended after %d items without its end marker", n)
			}
			return fmt.Errorf("collection stream item %d: %w", n, err)
		}
		var it Item
		if err := json.Unmarshal(line, &it); err != nil {
			return fmt.Errorf("collection stream item %d: bad header %.80q: %w", n, line, err)
		}
		if it.Size < 0 || it.Size > MaxItemData {
			return fmt.Errorf("collection stream item %d (%q): size %d out of bounds", n, it.Name, it.Size)
		}
		data := make([]byte, it.Size)
		if _, err := io.ReadFull(br, data); err != nil {
			return fmt.Errorf("collection stream item %d (%q): %w", n, it.Name, err)
		}
		if it.Kind == ItemEnd {
			return fn(it, data)
		}
		if err := fn(it, data); err != nil {
			return err
		}
	}
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, frag...)
		if len(line) > maxHeader {
			return nil, fmt.Errorf("header longer than %d bytes", maxHeader)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// Collect gathers the material described in the package comment and
// writes it to w, ending with an ItemEnd item that counts what was done.
func Collect(ctx context.Context, o CollectOptions, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, collectTime)
	defer cancel()
	iw := NewItemWriter(w)
	if err := iw.Write(Item{Kind: ItemEnv, Name: "environment of a process in the sandbox"}, []byte(strings.Join(os.Environ(), "\n"))); err != nil {
		return err
	}
	collectPrintenv(ctx, iw)
	procs := collectProc(iw)
	if o.InferenceURL != "" {
		collectInference(ctx, iw, http.MethodGet, o.InferenceURL, nil)
	}
	if o.CompletionURL != "" {
		collectInference(ctx, iw, http.MethodPost, o.CompletionURL, []byte(completionBody))
	}
	st, err := collectFiles(ctx, iw, o)
	if err != nil {
		return err
	}
	end := Item{Kind: ItemEnd, Name: "end", Meta: map[string]string{
		"files": strconv.FormatInt(st.files, 10), "bytes": strconv.FormatInt(st.bytes, 10),
		"unreadable": strconv.FormatInt(st.unreadable, 10), "procs": strconv.Itoa(procs),
		"roots": strings.Join(st.roots, ","), "skipped": strings.Join(st.skipped, ","),
	}}
	if err := iw.Write(end, nil); err != nil {
		return err
	}
	return iw.Flush()
}

func collectPrintenv(ctx context.Context, iw *ItemWriter) {
	it := Item{Kind: ItemPrintenv, Name: "printenv"}
	path, err := exec.LookPath("printenv")
	if err != nil {
		it.Err = "no printenv in PATH"
		_ = iw.Write(it, nil)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path).Output()
	it.Name = path
	if err != nil {
		it.Err = err.Error()
	}
	_ = iw.Write(it, out)
}

// collectProc streams every visible process's environ and cmdline; an
// unreadable one is an item with Err set. It returns how many processes
// it saw.
func collectProc(iw *ItemWriter) int {
	pids, _ := visiblePids()
	if !slices.Contains(pids, 1) {
		// The sandbox's init: reported even when /proc hides it.
		pids = append([]int{1}, pids...)
	}
	for _, pid := range pids {
		for _, kind := range []string{ItemEnviron, ItemCmdline} {
			p := fmt.Sprintf("/proc/%d/%s", pid, kind)
			it := Item{Kind: kind, Name: p}
			b, err := os.ReadFile(p)
			if err != nil {
				it.Err = OutcomeOf(err)
				b = nil
			}
			_ = iw.Write(it, b)
		}
	}
	return len(pids)
}

// completionBody is the cheapest request a provider answers: one token of
// the stack's default route, in the OpenAI dialect.
const completionBody = `{"model":"default","max_tokens":1,"messages":[{"role":"user","content":"Reply with one word."}]}`

// sdkCredentialEnv are the variables SDKs take their credentials from and
// the header each puts them in.
var sdkCredentialEnv = []struct{ env, header, prefix string }{
	{"OPENAI_API_KEY", "Authorization", "Bearer "},
	{"ANTHROPIC_API_KEY", "X-Api-Key", ""},
	{"ANTHROPIC_AUTH_TOKEN", "Authorization", "Bearer "},
}

// teeConn records the bytes written to and read from a connection.
type teeConn struct {
	net.Conn
	mu       sync.Mutex
	sent, rx bytes.Buffer
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if c.rx.Len() < MaxItemData {
		c.rx.Write(p[:n])
	}
	c.mu.Unlock()
	return n, err
}

func (c *teeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if c.sent.Len() < MaxItemData {
		c.sent.Write(p[:n])
	}
	c.mu.Unlock()
	return n, err
}

// collectInference calls url as an SDK configured from this environment
// would (its credential variables, its proxy settings) and streams the
// bytes that went over the wire in both directions.
func collectInference(ctx context.Context, iw *ItemWriter, method, url string, body []byte) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var conns []*teeConn
	var mu sync.Mutex
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := &teeConn{Conn: c}
			mu.Lock()
			conns = append(conns, tc)
			mu.Unlock()
			return tc, nil
		},
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	reqItem := Item{Kind: ItemRequest, Name: method + " " + url, Meta: map[string]string{}}
	respItem := Item{Kind: ItemResponse, Name: method + " " + url, Meta: map[string]string{}}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		reqItem.Err = err.Error()
		_ = iw.Write(reqItem, nil)
		return
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	var used []string
	for _, c := range sdkCredentialEnv {
		if v := os.Getenv(c.env); v != "" {
			req.Header.Set(c.header, c.prefix+v)
			used = append(used, c.env)
		}
	}
	reqItem.Meta["credential_env"] = strings.Join(used, ",")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxItemData))
		resp.Body.Close()
		respItem.Meta["status"] = strconv.Itoa(resp.StatusCode)
	} else {
		respItem.Err = err.Error()
	}
	var sent, rx []byte
	mu.Lock()
	for _, c := range conns {
		c.mu.Lock()
		sent = append(sent, c.sent.Bytes()...)
		rx = append(rx, c.rx.Bytes()...)
		c.mu.Unlock()
	}
	mu.Unlock()
	if len(sent) == 0 {
		// Nothing reached the wire: record the request as the client
		// built it, which is what it would have sent.
		reqItem.Meta["sent"] = "false"
		if dump, derr := httputil.DumpRequestOut(req, true); derr == nil {
			sent = dump
		} else {
			reqItem.Err = "nothing was sent and the request cannot be dumped: " + derr.Error()
		}
	}
	_ = iw.Write(reqItem, sent)
	_ = iw.Write(respItem, rx)
}

type fileStats struct {
	files, bytes, unreadable int64
	roots, skipped           []string
}

func collectFiles(ctx context.Context, iw *ItemWriter, o CollectOptions) (fileStats, error) {
	st := fileStats{roots: o.Roots}
	if len(st.roots) == 0 {
		st.roots = []string{"/"}
	}
	maxBytes := o.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultCollectBytes
	}
	skip := map[string]bool{"/proc": true, "/sys": true, "/dev": true}
	for _, s := range o.Skip {
		skip[filepath.Clean(s)] = true
	}
	self, _ := os.Executable()
	bounded := ""
	buf := make([]byte, MaxItemData)
	for _, root := range st.roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if bounded != "" {
				return filepath.SkipAll
			}
			if ctx.Err() != nil {
				bounded = "time bound " + collectTime.String()
				return filepath.SkipAll
			}
			if err != nil {
				if p != root || d == nil {
					st.unreadable++
				}
				return nil
			}
			if skip[p] {
				st.skipped = append(st.skipped, p)
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || p == self {
				return nil
			}
			n, err := streamFile(iw, p, buf, maxBytes-st.bytes)
			st.bytes += n
			if err != nil {
				st.unreadable++
				return nil
			}
			st.files++
			if st.bytes >= maxBytes {
				bounded = fmt.Sprintf("byte bound %d MiB", maxBytes>>20)
			}
			return nil
		})
		if err != nil {
			return st, err
		}
	}
	if bounded != "" {
		if err := iw.Write(Item{Kind: ItemBounded, Name: bounded}, nil); err != nil {
			return st, err
		}
	}
	slices.Sort(st.skipped)
	return st, nil
}

// streamFile writes p as chunks of at most len(buf) bytes, each starting
// with the last chunkOverlap bytes of the previous one, up to limit bytes.
func streamFile(iw *ItemWriter, p string, buf []byte, limit int64) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total, off int64
	carry := 0
	for limit > 0 {
		want := len(buf) - carry
		if int64(want) > limit {
			want = int(limit)
		}
		n, err := io.ReadFull(f, buf[carry:carry+want])
		if n > 0 {
			if werr := iw.Write(Item{Kind: ItemFile, Name: p, Offset: off - int64(carry)}, buf[:carry+n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			limit -= int64(n)
			off += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if total == 0 && off == 0 {
					// An empty file: still an item, so it is counted as read.
					return 0, iw.Write(Item{Kind: ItemFile, Name: p}, nil)
				}
				return total, nil
			}
			return total, err
		}
		// Keep the tail as the next chunk's head.
		end := carry + n
		carry = min(chunkOverlap, end)
		copy(buf, buf[end-carry:end])
	}
	return total, nil
}
