package config

import (
	"strings"
	"testing"
	"time"
)

const example = `
router:
  providers:
    anthropic: {kind: anthropic, base_url: https://api.anthropic.com}
    openai:    {kind: openai,    base_url: https://api.openai.com/v1, timeout: 20s}
  routes:
    default:
      - {provider: anthropic, model: claude-sonnet-4-20250514}
      - {provider: openai,    model: gpt-4.1}
  retry: {initial: 250ms, deadline: 30s}
  prices:
    claude-sonnet-4-20250514: {input: 3, output: 15}
sandboxes:
  assistant:
    command: [/usr/bin/python3, /sandbox/agent.py]
    env: {AGENT_NAME: claw}
    limits: {requests_per_minute: 60, tokens_per_minute: 100000, concurrent: 4, usd_per_day: 10}
    policy:
      network:
        - {name: github-read, hosts: [api.github.com], ports: [443], methods: [GET]}
      resources: {memory: 1GiB, pids: 256}
`

func TestParseExample(t *testing.T) {
	cfg, err := Parse([]byte(example), "clawcage.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	r := cfg.Router
	if got := r.Providers["openai"].Timeout.D(); got != 20*time.Second {
		t.Errorf("openai timeout = %v, want 20s", got)
	}
	if got := len(r.Routes["default"]); got != 2 {
		t.Fatalf("default route has %d targets, want 2", got)
	}
	if got := r.Routes["default"][1]; got != (Target{Provider: "openai", Model: "gpt-4.1"}) {
		t.Errorf("second target = %+v", got)
	}
	if r.Retry.Initial.D() != 250*time.Millisecond || r.Retry.Deadline.D() != 30*time.Second {
		t.Errorf("retry = %+v, want initial 250ms deadline 30s", r.Retry)
	}
	if r.Retry.Max.D() != DefaultRetryMax || r.Retry.CooldownAfter != DefaultCooldownAfter {
		t.Errorf("retry defaults not applied: %+v", r.Retry)
	}
	sb := cfg.Sandboxes["assistant"]
	if sb.Restart != RestartAlways {
		t.Errorf("restart = %q, want default %q", sb.Restart, RestartAlways)
	}
	if sb.Limits.TokensPerMinute != 100000 || sb.Limits.USDPerDay != 10 {
		t.Errorf("limits = %+v", sb.Limits)
	}
	if len(sb.Policy.Network) != 1 || sb.Policy.Network[0].Name != "github-read" {
		t.Errorf("policy network = %+v", sb.Policy.Network)
	}
	if sb.Policy.Resources.Memory != 1<<30 {
		t.Errorf("policy memory = %d, want 1GiB", sb.Policy.Resources.Memory)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown top-level field", "routr: {}\n", "cfg.yaml:1: field routr not found"},
		{"unknown provider field", "router:\n  providers:\n    a: {kind: openai, base_url: http://x, key: sk-1}\n", "cfg.yaml:3: field key not found"},
		{"bad kind", "router:\n  providers:\n    a:\n      kind: gemini\n      base_url: http://x\n", `cfg.yaml:4: router.providers.a.kind: "gemini" is not a provider kind`},
		{"missing base_url", "router:\n  providers:\n    a: {kind: openai}\n", "cfg.yaml:3: router.providers.a.base_url: missing"},
		{"credentials in base_url", "router:\n  providers:\n    a: {kind: openai, base_url: 'https://u:p@x'}\n", "cfg.yaml:3: router.providers.a.base_url: must not carry credentials"},
		{"route to unknown provider", "router:\n  routes:\n    default:\n      - {provider: nope, model: m}\n", `cfg.yaml:4: router.routes.default.0.provider: unknown provider "nope"`},
		{"empty route", "router:\n  routes:\n    default: []\n", "cfg.yaml:3: router.routes.default: a route needs at least one target"},
		{"bad duration", "router:\n  retry:\n    initial: soon\n", `cfg.yaml:3: "soon" is not a duration`},
		{"negative limit", "sandboxes:\n  a:\n    limits:\n      concurrent: -1\n", "cfg.yaml:4: sandboxes.a.limits.concurrent: cannot be negative"},
		{"bad restart", "sandboxes:\n  a:\n    restart: sometimes\n", `cfg.yaml:3: sandboxes.a.restart: "sometimes" is not a restart policy`},
		{"relative command", "sandboxes:\n  a:\n    command: [agent]\n", `cfg.yaml:3: sandboxes.a.command: "agent" must be an absolute path`},
		{"bad sandbox name", "sandboxes:\n  Bad/Name: {}\n", "cfg.yaml:2: sandboxes.Bad/Name: sandbox name must match"},
		{"bad policy port", "sandboxes:\n  a:\n    policy:\n      network:\n        - {name: r, hosts: [x.example.com], ports: [70000]}\n", "cfg.yaml:5:"},
		{"not yaml", "router: [\n", "cfg.yaml:"},
		{"unknown preset param", "preset_params:\n  npm.mirror: http://registry.example.test\n", `cfg.yaml:2: preset_params.npm.mirror: no preset takes a parameter "npm.mirror"`},
		{"empty preset param", "preset_params:\n  npm.registry: ' '\n", "cfg.yaml:2: preset_params.npm.registry: empty value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "cfg.yaml")
			if err == nil {
				t.Fatalf("Parse accepted it; want error containing %q", tt.want)
			}
			if strings.Contains(err.Error(), " in type ") {
				t.Errorf("error %q names a Go type", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParsePresetParams(t *testing.T) {
	cfg, err := Parse([]byte("preset_params:\n  npm.registry: http://registry.example.test/\n"), "cfg.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := cfg.PresetParams["npm.registry"]; got != "http://registry.example.test/" {
		t.Fatalf("npm.registry = %q", got)
	}
}

func TestParseEmpty(t *testing.T) {
	cfg, err := Parse(nil, "empty.yaml")
	if err != nil {
		t.Fatalf("Parse(empty): %v", err)
	}
	if len(cfg.Sandboxes) != 0 || len(cfg.Router.Routes) != 0 {
		t.Fatalf("empty config has content: %+v", cfg)
	}
	if cfg.Router.Retry.Deadline.D() != DefaultRetryDeadline {
		t.Errorf("deadline default = %v", cfg.Router.Retry.Deadline.D())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("router: {providers: {a: {kind: openai, base_url: 'http://[::1]:1/v1'}}}"))
	f.Add([]byte("sandboxes: {a: {limits: {concurrent: 1}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml")
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}
