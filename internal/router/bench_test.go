package router_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
			r, err := router.New(router.Options{
				Providers: map[string]router.Provider{"fake": {Kind: router.KindOpenAI, BaseURL: fake.URL}},
				Routes:    map[string][]router.Target{"bench": {{Provider: "fake", Model: "gpt-bench"}}},
				Keys:      &memKeys{keys: map[string][]router.Key{"fake": {{ID: "k", Secret: []byte("sk-bench-0123456789")}}}},
				Usage:     &discardUsage{},
			})
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
				})
			}
			cancel()
			_ = r.Close()
		}
	}
}

type discardUsage struct{}

func (discardUsage) Record(context.Context, router.UsageRecord) error { return nil }
func (discardUsage) Spend(context.Context, string, time.Time) (float64, error) {
	return 0, nil
}
