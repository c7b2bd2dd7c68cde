package router

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clawcage/clawcage/internal/jsonscan"
)

// dialect is the wire format of an endpoint.
type dialect int

const (
	dialectOpenAI dialect = iota
	dialectAnthropic
)

func (d dialect) kind() string {
	if d == dialectAnthropic {
		return KindAnthropic
	}
	return KindOpenAI
}

// endpoint is one model API the router serves.
type endpoint struct {
	path    string // canonical path, "/v1/..."
	dialect dialect
	// metered endpoints produce tokens and cost; count_tokens does not.
	metered bool
	// streamable endpoints may carry "stream": true.
	streamable bool
}

var endpoints = map[string]*endpoint{
	"/v1/chat/completions":      {path: "/v1/chat/completions", dialect: dialectOpenAI, metered: true, streamable: true},
	"/v1/completions":           {path: "/v1/completions", dialect: dialectOpenAI, metered: true, streamable: true},
	"/v1/responses":             {path: "/v1/responses", dialect: dialectOpenAI, metered: true, streamable: true},
	"/v1/embeddings":            {path: "/v1/embeddings", dialect: dialectOpenAI, metered: true},
	"/v1/messages":              {path: "/v1/messages", dialect: dialectAnthropic, metered: true, streamable: true},
	"/v1/messages/count_tokens": {path: "/v1/messages/count_tokens", dialect: dialectAnthropic},
}

// canonicalPath accepts both "/v1/x" and "/x" (an SDK whose base URL lacks
// the /v1 suffix).
func canonicalPath(p string) string {
	if strings.HasPrefix(p, "/v1/") {
		return p
	}
	return "/v1" + p
}

// request is a parsed model request.
type request struct {
	ep        *endpoint
	body      []byte
	fields    fieldSet
	fieldBuf  [24]field // backing array of fields for the usual request
	model     string
	stream    bool
	maxTokens int64
	// estimate is the up-front token estimate used for admission.
	estimate int64
	// translated is set on a request translated from the client's
	// dialect (see crossing); includeUsage then says whether an OpenAI
	// client asked for the usage chunk of a stream.
	translated, includeUsage bool
}

// defaultMaxTokens is assumed for an OpenAI request without a limit on
// output when estimating tokens up front.
const defaultMaxTokens = 4096

// parseRequest validates body as a JSON object and extracts what routing
// and admission need.
func parseRequest(ep *endpoint, body []byte) (*request, *apiError) {
	if !json.Valid(body) {
		return nil, errBadRequest("request body is not valid JSON")
	}
	req := &request{ep: ep, body: body}
	fields, err := topFields(body, req.fieldBuf[:0])
	if err != nil {
		return nil, errBadRequest(err.Error())
	}
	req.fields = fields
	ms, ok := fields.get("model")
	if !ok {
		return nil, errBadRequest(`request has no "model" field`)
	}
	if req.model, ok = jsonscan.Unquote(body[ms.start:ms.end]); !ok || req.model == "" {
		return nil, errBadRequest(`"model" must be a non-empty string`)
	}
	if s, ok := fields.get("stream"); ok {
		switch string(body[s.start:s.end]) {
		case "true":
			req.stream = true
		case "false":
		default:
			return nil, errBadRequest(`"stream" must be a boolean`)
		}
		if req.stream && !ep.streamable {
			return nil, errBadRequest(fmt.Sprintf("%s does not stream", ep.path))
		}
	}
	for _, name := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		if s, ok := fields.get(name); ok && string(body[s.start:s.end]) != "null" {
			n, err := strconv.ParseInt(string(body[s.start:s.end]), 10, 64)
			if err != nil || n < 0 {
				return nil, errBadRequest(fmt.Sprintf("%q must be a non-negative integer", name))
			}
			req.maxTokens = max(req.maxTokens, n)
		}
	}
	req.estimate = int64(len(body)+3) / 4
	if ep.metered && ep.path != "/v1/embeddings" {
		if req.maxTokens > 0 {
			req.estimate += req.maxTokens
		} else {
			req.estimate += defaultMaxTokens
		}
	}
	return req, nil
}

// estimateSplit divides the up-front token estimate into input and
// output tokens: the output is the request's limit, or the default that
// the estimate assumed (and a translated request sends) without one.
func (q *request) estimateSplit() (in, out int64) {
	out = q.maxTokens
	if out == 0 && q.ep.metered && q.ep.path != "/v1/embeddings" {
		out = defaultMaxTokens
	}
	return q.estimate - out, out
}

// withModel returns the body with only the top-level "model" value
// replaced by modelJSON (a JSON string).
func (q *request) withModel(modelJSON []byte) []byte {
	s, _ := q.fields.get("model")
	return replaceSpan(q.body, s, modelJSON)
}

// quoteJSON returns s as a JSON string literal.
func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// apiError is an error the router itself answers with, in the endpoint's
// dialect.
type apiError struct {
	status     int
	message    string
	code       string        // OpenAI "code"; optional
	param      string        // OpenAI "param": the offending request field; optional
	retryAfter time.Duration // >0 sets Retry-After
	reason     string        // metric/log label for refusals
}

func (e *apiError) Error() string { return e.message }

func errBadRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: msg, reason: "bad_request"}
}

// write sends e as the error body of dialect d.
func (e *apiError) write(w http.ResponseWriter, d dialect) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.retryAfter > 0 {
		secs := int64((e.retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(e.body(d))
}

func (e *apiError) body(d dialect) []byte {
	var b []byte
	if d == dialectAnthropic {
		b, _ = json.Marshal(map[string]any{
			"type":  "error",
			"error": map[string]any{"type": anthropicErrorType(e.status), "message": e.message},
		})
	} else {
		typ := openAIErrorType(e.status)
		code := e.code
		if code == "" && e.status == http.StatusTooManyRequests {
			code = "rate_limit_exceeded"
		}
		var c, p any
		if code != "" {
			c = code
		}
		if e.param != "" {
			p = e.param
		}
		b, _ = json.Marshal(map[string]any{
			"error": map[string]any{"message": e.message, "type": typ, "param": p, "code": c},
		})
	}
	return b
}

func openAIErrorType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "invalid_request_error"
	case status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

func anthropicErrorType(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case 529, http.StatusServiceUnavailable:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}
