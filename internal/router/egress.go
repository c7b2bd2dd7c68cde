package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Provider-side tool names, as the sandbox policy's provider_tools lists them.
const (
	ToolWebSearch       = "web_search"
	ToolWebFetch        = "web_fetch"
	ToolCodeExecution   = "code_execution"
	ToolMCP             = "mcp"
	ToolCodeInterpreter = "code_interpreter"
	ToolFileSearch      = "file_search"
	ToolImageGeneration = "image_generation"
	ToolComputerUse     = "computer_use"
)

// egressError refuses a request that would make the provider reach the
// network on the sandbox's behalf.
func egressError(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, message: "clawcage: " + fmt.Sprintf(format, args...), reason: "provider_egress"}
}

// checkEgress refuses provider-side tools and URL inputs that pol does not
// allow. pol may be nil (allow none).
func checkEgress(q *request, pol EgressPolicy) *apiError {
	allowsTool := func(name string) bool { return pol != nil && pol.AllowsProviderTool(name) }
	if s, ok := q.fields.get("tools"); ok {
		var tools []map[string]json.RawMessage
		if err := json.Unmarshal(q.body[s.start:s.end], &tools); err != nil {
			return errBadRequest(`"tools" must be an array of objects`)
		}
		for i, t := range tools {
			var typ string
			if raw, ok := t["type"]; ok {
				if err := json.Unmarshal(raw, &typ); err != nil {
					return errBadRequest(fmt.Sprintf(`tools[%d].type must be a string`, i))
				}
			}
			name, isServer := serverTool(q.ep.dialect, typ)
			if !isServer {
				continue
			}
			if name == "" {
				return egressError("tools[%d]: tool type %q is not known to be safe and is refused; the provider may run it with network access", i, typ)
			}
			if !allowsTool(name) {
				return egressError("tools[%d]: provider-side tool %q (%s) is not allowed by this sandbox's policy (provider_tools)", i, typ, name)
			}
			if name == ToolMCP {
				if raw, ok := t["server_url"]; ok {
					if e := checkURLValue(raw, pol, fmt.Sprintf("tools[%d].server_url", i)); e != nil {
						return e
					}
				}
			}
		}
	}
	if s, ok := q.fields.get("mcp_servers"); ok && string(q.body[s.start:s.end]) != "null" && string(q.body[s.start:s.end]) != "[]" {
		if !allowsTool(ToolMCP) {
			return egressError("mcp_servers: remote MCP servers reached by the provider are not allowed by this sandbox's policy (provider_tools)")
		}
		var servers []map[string]json.RawMessage
		if err := json.Unmarshal(q.body[s.start:s.end], &servers); err != nil {
			return errBadRequest(`"mcp_servers" must be an array of objects`)
		}
		for i, srv := range servers {
			if raw, ok := srv["url"]; ok {
				if e := checkURLValue(raw, pol, fmt.Sprintf("mcp_servers[%d].url", i)); e != nil {
					return e
				}
			}
		}
	}
	if s, ok := q.fields.get("web_search_options"); ok && string(q.body[s.start:s.end]) != "null" && !allowsTool(ToolWebSearch) {
		return egressError("web_search_options: provider-side web search is not allowed by this sandbox's policy (provider_tools)")
	}
	// URL inputs: walk the content-bearing fields for URL-valued keys.
	// A cheap byte check skips the walk for the common request without URLs.
	for _, field := range []string{"messages", "input", "system"} {
		s, ok := q.fields.get(field)
		if !ok {
			continue
		}
		raw := q.body[s.start:s.end]
		if !bytes.Contains(raw, []byte(`url"`)) && !bytes.Contains(raw, []byte(`url\u0022`)) && !bytes.Contains(raw, []byte(`\u`)) {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return errBadRequest(fmt.Sprintf("%q is not valid JSON", field))
		}
		if e := walkURLs(v, field, pol); e != nil {
			return e
		}
	}
	return nil
}

// serverTool classifies a tool type. isServer is false for tools the
// client executes (functions, custom tools, Anthropic's bash/text editor/
// memory); name is "" for a server-side or unknown type that has no knob
// (refused).
func serverTool(d dialect, typ string) (name string, isServer bool) {
	if typ == "" || typ == "function" || typ == "custom" {
		return "", false
	}
	if d == dialectAnthropic {
		switch {
		case strings.HasPrefix(typ, "bash_"), strings.HasPrefix(typ, "text_editor_"), strings.HasPrefix(typ, "memory_"):
			return "", false
		case strings.HasPrefix(typ, "web_search_"):
			return ToolWebSearch, true
		case strings.HasPrefix(typ, "web_fetch_"):
			return ToolWebFetch, true
		case strings.HasPrefix(typ, "code_execution_"):
			return ToolCodeExecution, true
		case strings.HasPrefix(typ, "computer_"):
			return ToolComputerUse, true
		case strings.HasPrefix(typ, "mcp_toolset"):
			return ToolMCP, true
		}
		return "", true
	}
	switch {
	case typ == "local_shell", typ == "shell", typ == "apply_patch":
		return "", false
	case strings.HasPrefix(typ, "web_search"):
		return ToolWebSearch, true
	case typ == "mcp":
		return ToolMCP, true
	case typ == "code_interpreter":
		return ToolCodeInterpreter, true
	case typ == "file_search":
		return ToolFileSearch, true
	case typ == "image_generation":
		return ToolImageGeneration, true
	case strings.HasPrefix(typ, "computer_use"):
		return ToolComputerUse, true
	}
	return "", true
}

// urlKeys are the object keys whose string value is a URL the provider
// fetches: OpenAI image_url (string or {url}), file_url, Responses
// input_image.image_url, Anthropic source {type:url, url}.
var urlKeys = map[string]bool{"url": true, "image_url": true, "file_url": true}

func walkURLs(v any, path string, pol EgressPolicy) *apiError {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			p := path + "." + k
			if s, ok := child.(string); ok && urlKeys[k] {
				if e := checkURL(s, pol, p); e != nil {
					return e
				}
				continue
			}
			if e := walkURLs(child, p, pol); e != nil {
				return e
			}
		}
	case []any:
		for i, child := range x {
			if e := walkURLs(child, path+"["+strconv.Itoa(i)+"]", pol); e != nil {
				return e
			}
		}
	}
	return nil
}

func checkURLValue(raw json.RawMessage, pol EgressPolicy, path string) *apiError {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return errBadRequest(path + " must be a string")
	}
	return checkURL(s, pol, path)
}

// checkURL allows data: URLs and http(s) URLs whose host:port the policy
// allows; anything else is refused.
func checkURL(raw string, pol EgressPolicy, path string) *apiError {
	if len(raw) >= 5 && strings.EqualFold(raw[:5], "data:") {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return egressError("%s: %s is not a data: URL or an http(s) URL the provider may fetch", path, strconv.Quote(truncate(raw, 200)))
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return egressError("%s: bad port in URL", path)
		}
		port = n
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if pol == nil || !pol.AllowsURL(host, port) {
		return egressError("%s: the provider would fetch %s, which this sandbox's network policy does not allow", path, strconv.Quote(net.JoinHostPort(host, strconv.Itoa(port))))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
