// Package config reads clawcage.yaml, the one file that describes a whole
// stack: the privacy router's providers, routes, retries and prices, and each
// sandbox with its command, admission limits and policy. It parses and
// validates; it starts nothing. Provider keys are never part of it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/policy"
)

// Config is a parsed, validated clawcage.yaml.
type Config struct {
	// Router configures the privacy router.
	Router Router `yaml:"router"`
	// Sandboxes are the stack's sandboxes by name.
	Sandboxes map[string]Sandbox `yaml:"sandboxes"`
	// PresetParams parameterise presets whose hosts are the operator's own
	// (for example "npm.registry"); an entry here wins over what
	// policy.DiscoverPresetParams reads from the clients' configuration.
	PresetParams map[string]string `yaml:"preset_params"`
}

// Router configures the privacy router.
type Router struct {
	// Providers by name; keys are set with `clawcage keys set`, never here.
	Providers map[string]Provider `yaml:"providers"`
	// Routes by name; a request's "model" names a route.
	Routes map[string][]Target `yaml:"routes"`
	// Retry governs backoff, cooldown and the deadline of a whole chain.
	Retry Retry `yaml:"retry"`
	// Prices in USD per million tokens, by provider model name.
	Prices map[string]Price `yaml:"prices"`
	// AllowDirect lets a request name "provider/model" instead of a route.
	AllowDirect bool `yaml:"allow_direct"`
}

// Provider kinds.
const (
	KindOpenAI    = "openai"
	KindAnthropic = "anthropic"
)

// Provider is one upstream model provider.
type Provider struct {
	// Kind is the wire format: "openai" (any compatible server) or "anthropic".
	Kind string `yaml:"kind"`
	// BaseURL is the API root, e.g. https://api.openai.com/v1.
	BaseURL string `yaml:"base_url"`
	// Timeout bounds one attempt against this provider; 0 means the chain deadline.
	Timeout Duration `yaml:"timeout"`
}

// Target is one step of a route's fallback chain.
type Target struct {
	Provider string `yaml:"provider"`
	Model    string `yaml:"model"`
}

// Retry governs the router's fallback behaviour.
type Retry struct {
	// Initial backoff before the first retry (default 500ms).
	Initial Duration `yaml:"initial"`
	// Max backoff between attempts (default 5s).
	Max Duration `yaml:"max"`
	// Deadline for a whole chain, all attempts included (default 60s).
	Deadline Duration `yaml:"deadline"`
	// Cooldown a provider+key+model rests after CooldownAfter consecutive failures (default 30s).
	Cooldown Duration `yaml:"cooldown"`
	// CooldownAfter consecutive failures start a cooldown (default 3).
	CooldownAfter int `yaml:"cooldown_after"`
}

// Price is a model's price in USD per million tokens.
type Price struct {
	Input  float64 `yaml:"input"`
	Output float64 `yaml:"output"`
}

// Restart policies for a sandbox's command.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Sandbox is one sandbox of the stack.
type Sandbox struct {
	// Command is the agent to run inside; empty means the sandbox idles
	// (useful for `sandbox exec` and `sandbox shell`).
	Command []string `yaml:"command"`
	// Env adds variables to the command's otherwise empty environment.
	Env map[string]string `yaml:"env"`
	// Restart is always (default), on-failure or never.
	Restart string `yaml:"restart"`
	// Limits are the router's admission limits for this sandbox.
	Limits Limits `yaml:"limits"`
	// Policy is the sandbox's network, filesystem and resource policy.
	Policy policy.Policy `yaml:"-"`
}

// Limits are the privacy router's admission limits for one sandbox; zero means unlimited.
type Limits struct {
	RequestsPerMinute int     `yaml:"requests_per_minute"`
	TokensPerMinute   int     `yaml:"tokens_per_minute"`
	Concurrent        int     `yaml:"concurrent"`
	USDPerDay         float64 `yaml:"usd_per_day"`
	USDPerMonth       float64 `yaml:"usd_per_month"`
}

// Duration is a time.Duration written in YAML as "500ms", "5s" or "1m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 500ms or 5s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 500ms, 5s, 1m)", n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %s is negative", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults applied to an unset Retry.
const (
	DefaultRetryInitial  = 500 * time.Millisecond
	DefaultRetryMax      = 5 * time.Second
	DefaultRetryDeadline = 60 * time.Second
	DefaultCooldown      = 30 * time.Second
	DefaultCooldownAfter = 3
)

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// rawConfig mirrors Config with sandbox policies kept as nodes, so that
// internal/policy decodes them with its own rules and line numbers.
type rawConfig struct {
	Router       Router                `yaml:"router"`
	Sandboxes    map[string]rawSandbox `yaml:"sandboxes"`
	PresetParams map[string]string     `yaml:"preset_params"`
}

type rawSandbox struct {
	Command []string          `yaml:"command"`
	Env     map[string]string `yaml:"env"`
	Restart string            `yaml:"restart"`
	Limits  Limits            `yaml:"limits"`
	Policy  yaml.Node         `yaml:"policy"`
}

// Parse parses and validates a configuration; source names it in errors.
func Parse(data []byte, source string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(source, err)
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(source, err)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	v := validator{source: source, root: doc}
	cfg := &Config{Router: raw.Router, Sandboxes: make(map[string]Sandbox, len(raw.Sandboxes)), PresetParams: raw.PresetParams}
	v.router(&cfg.Router)
	v.presetParams(cfg.PresetParams)
	for _, name := range sortedKeys(raw.Sandboxes) {
		rs := raw.Sandboxes[name]
		sb := Sandbox{Command: rs.Command, Env: rs.Env, Restart: rs.Restart, Limits: rs.Limits}
		v.sandbox(name, &sb)
		if rs.Policy.Kind != 0 {
			p, err := policy.DecodeNode(&rs.Policy, source)
			if err != nil {
				v.errs = append(v.errs, err)
			} else {
				sb.Policy = *p
			}
		}
		cfg.Sandboxes[name] = sb
	}
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return cfg, nil
}

// yamlLine matches the "line N: " prefix yaml.v3 puts on its messages.
var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:yaml: )?line (\d+): `) })

// yamlError rewrites yaml.v3 errors as "source:LINE: reason", one per line.
func yamlError(source string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, e := range te.Errors {
			errs = append(errs, errors.New(withSource(source, e)))
		}
		return errors.Join(errs...)
	}
	return errors.New(withSource(source, strings.TrimPrefix(err.Error(), "yaml: ")))
}

// goType matches the " in type config.rawSandbox" suffix yaml.v3 puts on
// unknown-field errors: Go type names mean nothing to an operator.
var goType = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(` in type [\w.*\[\]]+$`) })

func withSource(source, msg string) string {
	msg = goType().ReplaceAllString(msg, "")
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s: %s", source, m[1], msg[len(m[0]):])
	}
	return source + ": " + msg
}

// validator collects semantic errors, each naming the line and the field.
type validator struct {
	source string
	root   *yaml.Node
	errs   []error
}

func (v *validator) errorf(path []string, format string, args ...any) {
	line := lineOf(v.root, path)
	field := strings.Join(path, ".")
	v.errs = append(v.errs, fmt.Errorf("%s:%d: %s: %s", v.source, line, field, fmt.Sprintf(format, args...)))
}

// namePattern is what provider, route and sandbox names may look like:
// they appear in paths, headers and metric labels.
var namePattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`) })

func (v *validator) router(r *Router) {
	for _, name := range sortedKeys(r.Providers) {
		p := r.Providers[name]
		path := []string{"router", "providers", name}
		if !namePattern().MatchString(name) {
			v.errorf(path, "provider name must match %s", namePattern())
		}
		switch p.Kind {
		case KindOpenAI, KindAnthropic:
		case "":
			v.errorf(append(path, "kind"), "missing (want openai or anthropic)")
		default:
			v.errorf(append(path, "kind"), "%q is not a provider kind (want openai or anthropic)", p.Kind)
		}
		u, err := url.Parse(p.BaseURL)
		switch {
		case p.BaseURL == "":
			v.errorf(append(path, "base_url"), "missing")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			v.errorf(append(path, "base_url"), "%q is not an http(s) URL", p.BaseURL)
		case u.User != nil:
			v.errorf(append(path, "base_url"), "must not carry credentials; set keys with `clawcage keys set`")
		case u.RawQuery != "" || u.Fragment != "":
			v.errorf(append(path, "base_url"), "must not have a query or fragment")
		}
	}
	for _, name := range sortedKeys(r.Routes) {
		chain := r.Routes[name]
		path := []string{"router", "routes", name}
		if !namePattern().MatchString(name) {
			v.errorf(path, "route name must match %s", namePattern())
		}
		if len(chain) == 0 {
			v.errorf(path, "a route needs at least one target")
		}
		for i, t := range chain {
			tp := append(append([]string(nil), path...), fmt.Sprint(i))
			if _, ok := r.Providers[t.Provider]; !ok {
				v.errorf(append(tp, "provider"), "unknown provider %q", t.Provider)
			}
			if t.Model == "" {
				v.errorf(append(tp, "model"), "missing")
			}
		}
	}
	for _, model := range sortedKeys(r.Prices) {
		p := r.Prices[model]
		if p.Input < 0 || p.Output < 0 {
			v.errorf([]string{"router", "prices", model}, "prices cannot be negative")
		}
	}
	if r.Retry.CooldownAfter < 0 {
		v.errorf([]string{"router", "retry", "cooldown_after"}, "cannot be negative")
	}
	if r.Retry.Initial == 0 {
		r.Retry.Initial = Duration(DefaultRetryInitial)
	}
	if r.Retry.Max == 0 {
		r.Retry.Max = Duration(DefaultRetryMax)
	}
	if r.Retry.Deadline == 0 {
		r.Retry.Deadline = Duration(DefaultRetryDeadline)
	}
	if r.Retry.Cooldown == 0 {
		r.Retry.Cooldown = Duration(DefaultCooldown)
	}
	if r.Retry.CooldownAfter == 0 {
		r.Retry.CooldownAfter = DefaultCooldownAfter
	}
	if r.Retry.Max < r.Retry.Initial {
		v.errorf([]string{"router", "retry", "max"}, "%s is less than initial %s", r.Retry.Max.D(), r.Retry.Initial.D())
	}
}

func (v *validator) presetParams(params map[string]string) {
	known := map[string]bool{}
	for _, p := range policy.Presets() {
		for _, param := range p.Params {
			known[param.Name] = true
		}
	}
	for _, k := range sortedKeys(params) {
		path := []string{"preset_params", k}
		if !known[k] {
			v.errorf(path, "no preset takes a parameter %q (see `clawcage policy presets`)", k)
		} else if strings.TrimSpace(params[k]) == "" {
			v.errorf(path, "empty value")
		}
	}
}

// envName is a portable environment variable name.
var envName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

func (v *validator) sandbox(name string, sb *Sandbox) {
	path := []string{"sandboxes", name}
	if !namePattern().MatchString(name) {
		v.errorf(path, "sandbox name must match %s", namePattern())
	}
	switch sb.Restart {
	case "":
		sb.Restart = RestartAlways
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		v.errorf(append(path, "restart"), "%q is not a restart policy (want always, on-failure or never)", sb.Restart)
	}
	if len(sb.Command) > 0 && !strings.HasPrefix(sb.Command[0], "/") {
		v.errorf(append(path, "command"), "%q must be an absolute path inside the sandbox", sb.Command[0])
	}
	for _, k := range sortedKeys(sb.Env) {
		if !envName().MatchString(k) {
			v.errorf(append(path, "env", k), "not a valid environment variable name")
		}
	}
	l := sb.Limits
	lp := append(path, "limits")
	if l.RequestsPerMinute < 0 {
		v.errorf(append(lp, "requests_per_minute"), "cannot be negative")
	}
	if l.TokensPerMinute < 0 {
		v.errorf(append(lp, "tokens_per_minute"), "cannot be negative")
	}
	if l.Concurrent < 0 {
		v.errorf(append(lp, "concurrent"), "cannot be negative")
	}
	if l.USDPerDay < 0 {
		v.errorf(append(lp, "usd_per_day"), "cannot be negative")
	}
	if l.USDPerMonth < 0 {
		v.errorf(append(lp, "usd_per_month"), "cannot be negative")
	}
}

// lineOf finds the line of the deepest node along path (map keys and
// sequence indexes); it falls back to the nearest ancestor that exists.
func lineOf(n *yaml.Node, path []string) int {
	line := n.Line
	for _, p := range path {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscan(p, &idx); err != nil || idx < 0 || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
