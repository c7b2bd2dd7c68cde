package router_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

// BenchmarkRouter compares a request sent directly to a fake provider with
// the same request through the router (in-process, over loopback HTTP).
// The difference of ns/op between the "router" and "direct" sub-benchmarks
// is the added latency. See bench/router for the out-of-process numbers.
func BenchmarkRouter(b *testing.B) {
	for _, size := range []int{1024, 10240} {
		for _, stream := range []bool{false, true} {
			fake := routertest.New(b, routertest.OpenAI)
			fake.Text, fake.Chunks, fake.NoRecord = strings.Repeat("x", size), 10, true
			r, err := router.New(benchOptions(fake.URL))
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() { _ = r.Serve(ctx, ln, "bench") }()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
			for _, path := range []struct{ name, url, model string }{
				{"direct", fake.URL, "gpt-bench"},
				{"router", "http://" + ln.Addr().String() + "/v1", "bench"},
			} {
				body := []byte(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"max_tokens":256,"stream":%v}`, path.model, strings.Repeat("weather in Paris? ", 16), stream))
				b.Run(fmt.Sprintf("size=%d/stream=%v/%s", size, stream, path.name), func(b *testing.B) {
					cpu0 := cpuTime()
					for b.Loop() {
						resp, err := client.Post(path.url+"/chat/completions", "application/json", bytes.NewReader(body))
						if err != nil {
							b.Fatal(err)
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							b.Fatalf("status %d", resp.StatusCode)
						}
					}
					b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
				})
			}
			cancel()
			_ = r.Close()
		}
	}
}

// cpuTime is the process's user+system CPU time; benchmarks report CPU per
// request, which other load on the machine disturbs far less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discardUsage struct{}

func (discardUsage) Record(context.Context, router.UsageRecord) error { return nil }

// RecordBatch makes discardUsage a router.BatchRecorder, as the ledger is.
func (discardUsage) RecordBatch(context.Context, []router.UsageRecord) error { return nil }
func (discardUsage) Spend(context.Context, string, time.Time) (float64, error) {
	return 0, nil
}

// BenchmarkHandler measures the router's own work per request — parsing,
// admission, header hygiene, the model rewrite, metering, metrics, the log
// line and the usage row — by calling the handler directly with a canned
// upstream (no sockets, no HTTP server or client). ns/op and allocs/op are
// what the router adds on top of the HTTP plumbing any proxy pays.
func BenchmarkHandler(b *testing.B) {
	for _, size := range []int{1024, 10240} {
		for _, stream := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/stream=%v", size, stream), func(b *testing.B) {
				body := []byte(fmt.Sprintf(`{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":%q}],"max_tokens":256,"stream":%v}`, strings.Repeat("Tell me about the weather in Paris. ", 8), stream))
				benchHandler(b, cannedUpstream(size, stream), "/v1/chat/completions", body, http.Header{
					"Content-Type":  {"application/json"},
					"Authorization": {"Bearer sk-sandbox-fake"},
					"User-Agent":    {"OpenAI/Go 3.0"},
				})
			})
		}
	}
}

// benchOptions are the options of the benchmarks' router: one route,
// "bench", to model gpt-bench of the OpenAI-kind provider "fake" at
// baseURL, with one key and no usage ledger.
func benchOptions(baseURL string) router.Options {
	return router.Options{
		Providers: map[string]router.Provider{"fake": {Kind: router.KindOpenAI, BaseURL: baseURL}},
		Routes:    map[string][]router.Target{"bench": {{Provider: "fake", Model: "gpt-bench"}}},
		Keys:      &memKeys{keys: map[string][]router.Key{"fake": {{ID: "k", Secret: []byte("sk-bench-0123456789")}}}},
		Usage:     &discardUsage{},
	}
}

// benchHandler calls the handler of the benchmarks' router (benchOptions,
// answered by up, logging to nowhere) b.N times with a POST of body to
// path carrying header, and reports allocations and CPU per request;
// every answer must be a 200.
func benchHandler(b *testing.B, up http.RoundTripper, path string, body []byte, header http.Header) {
	opts := benchOptions("http://127.0.0.1:9/v1")
	opts.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	opts.Transport = up
	r, err := router.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	h := r.Handler("bench")
	rd := &rewindReader{}
	req, _ := http.NewRequest(http.MethodPost, "http://inference.local:8080"+path, rd)
	for k, v := range header {
		req.Header[k] = v
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		rd.Reset(body)
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cannedUpstream answers every request with the same chat completion (or
// SSE stream of 10 deltas, a usage chunk and [DONE], one event per Read).
func cannedUpstream(size int, stream bool) *cannedTransport {
	text := strings.Repeat("x", size)
	if !stream {
		b := fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`, text)
		return &cannedTransport{events: [][]byte{[]byte(b)}, ctype: "application/json"}
	}
	var ev [][]byte
	piece := size / 10
	for i := range 10 {
		ev = append(ev, []byte(fmt.Sprintf("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", text[i*piece:(i+1)*piece])))
	}
	ev = append(ev, []byte("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n"))
	ev = append(ev, []byte("data: [DONE]\n\n"))
	return &cannedTransport{events: ev, ctype: "text/event-stream"}
}

type cannedTransport struct {
	events [][]byte
	ctype  string
}

func (t *cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	n := int64(-1)
	if len(t.events) == 1 {
		n = int64(len(t.events[0]))
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {t.ctype}, "Openai-Organization": {"org-x"}, "X-Request-Id": {"req-1"}},
		Body:          &eventBody{events: t.events},
		ContentLength: n,
		Request:       req,
	}, nil
}

// eventBody returns one event per Read, as a provider flushing per event.
type eventBody struct {
	events [][]byte
	off    int
}

func (e *eventBody) Read(p []byte) (int, error) {
	for len(e.events) > 0 {
		n := copy(p, e.events[0][e.off:])
		e.off += n
		if e.off == len(e.events[0]) {
			e.events, e.off = e.events[1:], 0
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}

func (e *eventBody) Close() error { return nil }

type rewindReader struct{ bytes.Reader }

func (r *rewindReader) Close() error { return nil }

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
func (w *discardWriter) Flush() {}

// BenchmarkTranslatedHandler is BenchmarkHandler for an Anthropic client
// served by the same OpenAI upstream: the request, the answer (or each
// stream event) and the usage are translated. The difference from
// BenchmarkHandler is what translation costs a request.
func BenchmarkTranslatedHandler(b *testing.B) {
	for _, size := range []int{1024, 10240} {
		for _, stream := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/stream=%v", size, stream), func(b *testing.B) {
				body := []byte(fmt.Sprintf(`{"model":"bench","system":"You are terse.","messages":[{"role":"user","content":%q}],"max_tokens":256,"stream":%v}`, strings.Repeat("Tell me about the weather in Paris. ", 8), stream))
				benchHandler(b, cannedUpstream(size, stream), "/v1/messages", body, http.Header{
					"Content-Type":      {"application/json"},
					"Anthropic-Version": {"2023-06-01"},
					"X-Api-Key":         {"sk-sandbox-fake"},
				})
			})
		}
	}
}
