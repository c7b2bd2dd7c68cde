package router_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/router"
)

// allowPolicy allows the listed tools and hosts.
type allowPolicy struct {
	tools []string
	hosts []string
}

func (p allowPolicy) AllowsProviderTool(name string) bool { return slices.Contains(p.tools, name) }
func (p allowPolicy) AllowsURL(host string, port int) bool {
	return port == 443 && slices.Contains(p.hosts, host)
}

func TestProviderSideEgress(t *testing.T) {
	type tc struct {
		name     string
		path     string
		body     string // without "stream"; each case runs streaming and not
		tool     string // knob that allows it ("" = a host allows it)
		host     string
		refused  bool
		contains string
	}
	anth := func(extra string) string {
		return `{"model":"claude","max_tokens":20` + extra + `}`
	}
	msgs := func(content string) string {
		return `,"messages":[{"role":"user","content":` + content + `}]`
	}
	chat := func(extra string) string { return `{"model":"default"` + extra + `}` }
	resp := func(extra string) string { return `{"model":"default"` + extra + `}` }
	cases := []tc{
		// Anthropic server tools.
		{"anthropic web_search tool", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"type":"web_search_20250305","name":"web_search"}]`), "web_search", "", true, "web_search"},
		{"anthropic web_fetch tool", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]`), "web_fetch", "", true, "web_fetch"},
		{"anthropic code_execution tool", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"type":"code_execution_20250825","name":"code_execution"}]`), "code_execution", "", true, "code_execution"},
		{"anthropic mcp_servers", "/v1/messages", anth(msgs(`"hi"`) + `,"mcp_servers":[{"type":"url","url":"https://mcp.example.com/sse","name":"x"}]`), "mcp", "mcp.example.com", true, "mcp_servers"},
		{"anthropic unknown server tool type", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"type":"browser_toolset_20260801","name":"b"}]`), "", "", true, "not known to be safe"},
		{"anthropic custom tool is fine", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"url":{"type":"string"}}}}]`), "", "", false, ""},
		{"anthropic bash client tool is fine", "/v1/messages", anth(msgs(`"hi"`) + `,"tools":[{"type":"bash_20250124","name":"bash"}]`), "", "", false, ""},
		// Anthropic URL inputs.
		{"anthropic image url source", "/v1/messages", anth(msgs(`[{"type":"image","source":{"type":"url","url":"https://img.example.com/a.png"}}]`)), "", "img.example.com", true, "img.example.com:443"},
		{"anthropic document url source", "/v1/messages", anth(msgs(`[{"type":"document","source":{"type":"url","url":"https://docs.example.com/a.pdf"}}]`)), "", "docs.example.com", true, "docs.example.com:443"},
		{"anthropic image url inside tool_result", "/v1/messages", anth(msgs(`[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"https://evil.example/x"}}]}]`)), "", "evil.example", true, "evil.example"},
		{"anthropic escaped url key", "/v1/messages", anth(msgs(`[{"type":"image","source":{"type":"url","\u0075rl":"https://img.example.com/a.png"}}]`)), "", "img.example.com", true, "img.example.com"},
		{"anthropic base64 image is fine", "/v1/messages", anth(msgs(`[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]`)), "", "", false, ""},
		{"anthropic text mentioning a url is fine", "/v1/messages", anth(msgs(`"see https://evil.example/x"`)), "", "", false, ""},
		// OpenAI chat completions.
		{"chat image_url", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://img.example.com/a.png"}}]}]`), "", "img.example.com", true, "img.example.com:443"},
		{"chat image_url on another port", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://img.example.com:8443/a.png"}}]}]`), "", "", true, "img.example.com:8443"},
		{"chat image_url data: is fine", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]`), "", "", false, ""},
		{"chat ftp url refused", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y"}}]}]`), "", "", true, "not a data: URL"},
		{"chat web_search_options", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":"hi"}],"web_search_options":{}`), "web_search", "", true, "web_search_options"},
		{"chat function tool is fine", "/v1/chat/completions", chat(`,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]`), "", "", false, ""},
		// OpenAI Responses.
		{"responses web_search", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"web_search"}]`), "web_search", "", true, "web_search"},
		{"responses web_search_preview", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"web_search_preview"}]`), "web_search", "", true, "web_search_preview"},
		{"responses remote mcp", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"mcp","server_label":"x","server_url":"https://mcp.example.com/"}]`), "mcp", "mcp.example.com", true, "mcp"},
		{"responses code_interpreter", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]`), "code_interpreter", "", true, "code_interpreter"},
		{"responses file_search", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]`), "file_search", "", true, "file_search"},
		{"responses image_generation", "/v1/responses", resp(`,"input":"hi","tools":[{"type":"image_generation"}]`), "image_generation", "", true, "image_generation"},
		{"responses input_image url", "/v1/responses", resp(`,"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://img.example.com/a.png"}]}]`), "", "img.example.com", true, "img.example.com:443"},
		{"responses input_file url", "/v1/responses", resp(`,"input":[{"role":"user","content":[{"type":"input_file","file_url":"https://files.example.com/a.pdf"}]}]`), "", "files.example.com", true, "files.example.com:443"},
		{"responses input_file data is fine", "/v1/responses", resp(`,"input":[{"role":"user","content":[{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}]}]`), "", "", false, ""},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			name := c.name
			body := c.body
			if stream {
				name += "/stream"
				body = strings.TrimSuffix(body, "}") + `,"stream":true}`
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, nil)
				status, _, got := h.post(c.path, body)
				if !c.refused {
					if status != 200 {
						t.Fatalf("status = %d, want 200: %s", status, got)
					}
					return
				}
				if status != 400 {
					t.Fatalf("status = %d, want 400: %s", status, got)
				}
				var msg string
				if c.path == "/v1/messages" {
					var e struct {
						Type  string
						Error struct{ Type, Message string }
					}
					_ = json.Unmarshal(got, &e)
					if e.Type != "error" || e.Error.Type != "invalid_request_error" {
						t.Errorf("not an Anthropic error body: %s", got)
					}
					msg = e.Error.Message
				} else {
					var e struct {
						Error struct{ Type, Message string } `json:"error"`
					}
					_ = json.Unmarshal(got, &e)
					if e.Error.Type != "invalid_request_error" {
						t.Errorf("not an OpenAI error body: %s", got)
					}
					msg = e.Error.Message
				}
				if !strings.Contains(msg, c.contains) {
					t.Errorf("message %q does not name %q", msg, c.contains)
				}
				if n := len(h.oa.Requests()) + len(h.an.Requests()); n != 0 {
					t.Errorf("refused request reached the provider")
				}
				if c.tool == "" && c.host == "" {
					return
				}
				// The same request passes when the sandbox's policy allows it.
				h2 := newHarness(t, func(o *router.Options) {
					o.Sandboxes["agent"] = router.Sandbox{Egress: allowPolicy{tools: []string{c.tool}, hosts: []string{c.host}}}
				})
				if status, _, got := h2.post(c.path, body); status != 200 {
					t.Errorf("allowed by policy: status %d: %s", status, got)
				}
			})
		}
	}
}
