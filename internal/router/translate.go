package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/clawcage/clawcage/internal/router/xlate"
)

// crossing is a request's translation for the targets of the other
// dialect, made at most once per request and variant, and only when such
// a target is tried.
type crossing struct {
	done [2]bool
	q    [2]*request // the request as the other dialect's endpoint takes it
	err  [2]error    // why it cannot be translated
}

// errNotTranslated is the reason of an endpoint that is never translated.
var errNotTranslated = errors.New("only /v1/chat/completions and /v1/messages are translated into each other")

// get returns q translated for up, a provider of the other dialect. A
// request whose client has gone is not translated.
func (c *crossing) get(ctx context.Context, q *request, up *upstream) (*request, error) {
	v := 0
	if up.officialOpenAI {
		v = 1
	}
	if !c.done[v] {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("client gone before translation: %w", err)
		}
		c.q[v], c.err[v] = translateRequest(q, xlate.ChatOptions{MaxCompletionTokens: up.officialOpenAI})
		c.done[v] = true
	}
	return c.q[v], c.err[v]
}

// maxTranslatedRequest bounds the body of a request that is translated:
// translation holds a few copies of it (the same-dialect path none).
const maxTranslatedRequest = 16 << 20

// translateRequest translates q into the other dialect's endpoint.
func translateRequest(q *request, opt xlate.ChatOptions) (*request, error) {
	if len(q.body) > maxTranslatedRequest {
		return nil, &xlate.Unsupported{Field: "body", Reason: fmt.Sprintf("%d bytes; requests over %d MiB are not translated", len(q.body), maxTranslatedRequest>>20)}
	}
	var (
		tr  xlate.Request
		err error
		ep  *endpoint
	)
	switch q.ep.path {
	case "/v1/chat/completions":
		ep = endpoints["/v1/messages"]
		tr, err = xlate.ChatToMessagesRequest(q.body, defaultMaxTokens)
	case "/v1/messages":
		ep = endpoints["/v1/chat/completions"]
		tr, err = xlate.MessagesToChatRequest(q.body, opt)
	default:
		return nil, errNotTranslated
	}
	if err != nil {
		return nil, err
	}
	fields, err := topFields(tr.Body, nil)
	if err != nil {
		return nil, fmt.Errorf("translated request: %w", err)
	}
	return &request{ep: ep, body: tr.Body, fields: fields, model: q.model, stream: q.stream, maxTokens: q.maxTokens,
		estimate: q.estimate, includeUsage: tr.IncludeUsage, translated: true}, nil
}

// untranslatable is the 400 of a request that no target of its route can
// take: none speaks its dialect and it cannot be translated.
func untranslatable(q *request, route routeRef, err error) *apiError {
	other := dialectAnthropic
	if q.ep.dialect == dialectAnthropic {
		other = dialectOpenAI
	}
	msg := fmt.Sprintf("clawcage: route %s has no target speaking the %s format of %s, and the request cannot be translated for its %s targets: %v",
		route.name, q.ep.dialect.kind(), q.ep.path, other.kind(), err)
	ae := errBadRequest(msg)
	ae.reason = "untranslatable"
	var un *xlate.Unsupported
	if errors.As(err, &un) {
		ae.code, ae.param = "unsupported_parameter", un.Field
	}
	return ae
}

// translatedError rewrites a provider error body into the client's
// dialect, keeping the status and the provider's message.
func translatedError(status int, body []byte, d dialect) []byte {
	return (&apiError{status: status, message: xlate.ErrorMessage(status, body)}).body(d)
}

// maxTranslatedBody bounds a non-streamed response that is translated
// (it is read whole before translation).
const maxTranslatedBody = 32 << 20

// relayTranslated sends a translated provider response to the client.
// first is the response's first bytes (already read, nr > 0 or EOF); the
// attempt's timer is stopped. A non-streamed body is read and translated
// before anything is sent, so a body that does not translate still falls
// back; a stream is translated event by event as it arrives.
func (h *sandboxHandler) relayTranslated(w http.ResponseWriter, resp *http.Response, res *attemptResult, q, uq *request,
	route routeRef, t Target, n int, keys []Key, first []byte, rerr error, sse bool) {
	hdr := w.Header()
	if !sse {
		body := append([]byte(nil), first...)
		if rerr == nil {
			rest, err := io.ReadAll(io.LimitReader(resp.Body, maxTranslatedBody))
			body = append(body, rest...)
			if err != nil {
				res.status, res.outcome, res.err = 0, retryable, fmt.Errorf("read from provider: %w", err)
				return
			}
		}
		res.meter.Write(body)
		var out []byte
		var err error
		if uq.ep.dialect == dialectAnthropic {
			out, err = xlate.MessagesToChatResponse(body, h.r.opt.Now().Unix())
		} else {
			out, err = xlate.ChatToMessagesResponse(body)
		}
		if err != nil {
			// The provider has answered (and billed) this: it is final, not
			// a failure of the target to fall back from or cool down. The
			// client gets a 502 in its dialect; the usage is counted.
			res.meter.finish()
			res.status, res.outcome, res.err = http.StatusBadGateway, final, fmt.Errorf("translate response: %w", err)
			ae := &apiError{status: http.StatusBadGateway, message: fmt.Sprintf("clawcage: the answer of %s could not be translated: %v", h.targetLabel(route, t), err)}
			h.setRouteHeaders(hdr, route, t, n)
			ae.write(w, q.ep.dialect)
			return
		}
		out = redactSecrets(out, keys)
		copyOutbound(hdr, resp.Header, keys)
		h.setRouteHeaders(hdr, route, t, n)
		hdr.Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(resp.StatusCode)
		if _, err := w.Write(out); err != nil {
			res.outcome, res.err = aborted, fmt.Errorf("write to sandbox: %w", err)
		} else if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		res.meter.finish()
		return
	}

	type streamer interface {
		Write(dst, p []byte) ([]byte, error)
		Close(dst []byte) ([]byte, error)
	}
	var st streamer
	if uq.ep.dialect == dialectAnthropic {
		st = xlate.NewChatStream(uq.includeUsage, h.r.opt.Now().Unix())
	} else {
		st = xlate.NewMessagesStream()
	}
	copyOutbound(hdr, resp.Header, keys)
	h.setRouteHeaders(hdr, route, t, n)
	hdr.Set("Content-Type", "text/event-stream")
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	var out []byte
	chunk := first
	for {
		var xerr error
		out = out[:0]
		if len(chunk) > 0 {
			res.meter.Write(chunk)
			out, xerr = st.Write(out, chunk)
		}
		if xerr == nil && rerr == io.EOF {
			out, xerr = st.Close(out)
		}
		if len(out) > 0 {
			out = redactSecrets(out, keys)
			if _, werr := w.Write(out); werr != nil {
				res.outcome, res.err = aborted, fmt.Errorf("write to sandbox: %w", werr)
				break
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if xerr != nil {
			res.outcome, res.err = aborted, fmt.Errorf("translate stream: %w", xerr)
			break
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			res.outcome, res.err = aborted, fmt.Errorf("read from provider: %w", rerr)
			break
		}
		var nr int
		nr, rerr = resp.Body.Read(buf)
		chunk = buf[:nr]
	}
	res.meter.finish()
}
