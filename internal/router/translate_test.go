package router

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/router/xlate"
)

func TestCrossingPerUpstreamVariant(t *testing.T) {
	r, err := New(Options{
		Keys: noKeys{},
		Providers: map[string]Provider{
			"openai": {Kind: KindOpenAI, BaseURL: "https://API.openai.com/v1"},
			"vllm":   {Kind: KindOpenAI, BaseURL: "http://127.0.0.1:8000/v1"},
			"an":     {Kind: KindAnthropic, BaseURL: "https://api.anthropic.com"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	q, aerr := parseRequest(endpoints["/v1/messages"], []byte(`{"model":"r","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`))
	if aerr != nil {
		t.Fatal(aerr)
	}
	var c crossing
	tests := []struct {
		name, provider, want string
	}{
		{"OpenAI itself gets max_completion_tokens", "openai", `{"model":"r","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":50}`},
		{"a compatible server gets max_tokens", "vllm", `{"model":"r","messages":[{"role":"user","content":"hi"}],"max_tokens":50}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			xq, err := c.get(context.Background(), q, r.upstreams[tc.provider])
			if err != nil {
				t.Fatal(err)
			}
			if got := string(xq.withModel([]byte(`"m"`))); got != strings.Replace(tc.want, `"r"`, `"m"`, 1) {
				t.Errorf("body %s", got)
			}
			if xq.ep.path != "/v1/chat/completions" || !xq.translated {
				t.Errorf("translated request: %s translated=%v", xq.ep.path, xq.translated)
			}
			again, _ := c.get(context.Background(), q, r.upstreams[tc.provider])
			if again != xq {
				t.Errorf("translated twice")
			}
		})
	}
}

func TestTranslateRefusesHugeBody(t *testing.T) {
	body := []byte(`{"model":"r","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", maxTranslatedRequest) + `"}]}`)
	q, aerr := parseRequest(endpoints["/v1/messages"], body)
	if aerr != nil {
		t.Fatal(aerr)
	}
	_, err := translateRequest(q, xlate.ChatOptions{})
	var un *xlate.Unsupported
	if !errors.As(err, &un) || un.Field != "body" || !strings.Contains(un.Reason, "over 16 MiB") {
		t.Errorf("err = %v, want an Unsupported body", err)
	}
}

func TestNoTranslationForAGoneClient(t *testing.T) {
	q, aerr := parseRequest(endpoints["/v1/messages"], []byte(`{"model":"r","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
	if aerr != nil {
		t.Fatal(aerr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var c crossing
	if _, err := c.get(ctx, q, &upstream{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
