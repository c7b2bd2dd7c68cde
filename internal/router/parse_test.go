package router

import (
	"bytes"
	"io"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestTopFieldsDuplicates(t *testing.T) {
	many := func(n int, extra string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			b.WriteString(`"f` + strconv.Itoa(i) + `":` + strconv.Itoa(i) + ",")
		}
		return b.String() + extra + "}"
	}
	for _, tc := range []struct {
		name    string
		body    string
		wantErr bool
		fields  int
	}{
		{"two distinct fields", `{"model":"a","stream":true}`, false, 2},
		{"duplicate among few fields (linear check)", `{"model":"a","x":1,"model":"b"}`, true, 0},
		{"escaped duplicate among few fields", `{"model":"a","\u006dodel":"b"}`, true, 0},
		{"forty distinct fields (map check)", many(40, `"model":"a"`), false, 41},
		{"duplicate after forty fields (map check)", many(40, `"f3":"again"`), true, 0},
		{"escaped duplicate after forty fields", many(40, `"model":"a","\u006dodel":"b"`), true, 0},
		{"invalid UTF-8 names encoding/json reads as the same U+FFFD", "{\"\x80\":1,\"\xff\":2}", true, 0},
		{"invalid UTF-8 name next to a valid one", "{\"m\xffodel\":1,\"model\":\"a\"}", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := topFields([]byte(tc.body), nil)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "duplicate") {
					t.Fatalf("err %v, want a duplicate error", err)
				}
				return
			}
			if err != nil || len(fs) != tc.fields {
				t.Fatalf("got %d fields, err %v; want %d", len(fs), err, tc.fields)
			}
		})
	}
}

func TestParseRequestScalars(t *testing.T) {
	ep := endpoints["/v1/chat/completions"]
	for _, tc := range []struct {
		name      string
		body      string
		wantErr   string
		model     string
		stream    bool
		maxTokens int64
	}{
		{"plain", `{"model":"m","max_tokens":256,"stream":true}`, "", "m", true, 256},
		{"escaped model is decoded", `{"model":"a\u002fb","stream":false}`, "", "a/b", false, 0},
		{"invalid UTF-8 in model is replaced as encoding/json does", "{\"model\":\"a\xffb\"}", "", "a\uFFFDb", false, 0},
		{"null max_tokens is ignored", `{"model":"m","max_tokens":null}`, "", "m", false, 0},
		{"largest of the output limits counts", `{"model":"m","max_tokens":5,"max_completion_tokens":9}`, "", "m", false, 9},
		{"model must be a string", `{"model":5}`, `"model" must be a non-empty string`, "", false, 0},
		{"model must not be empty", `{"model":""}`, `"model" must be a non-empty string`, "", false, 0},
		{"stream as a string is refused", `{"model":"m","stream":"true"}`, `"stream" must be a boolean`, "", false, 0},
		{"stream as a number is refused", `{"model":"m","stream":1}`, `"stream" must be a boolean`, "", false, 0},
		{"negative max_tokens is refused", `{"model":"m","max_tokens":-1}`, `"max_tokens" must be a non-negative integer`, "", false, 0},
		{"fractional max_tokens is refused", `{"model":"m","max_tokens":1.5}`, `"max_tokens" must be a non-negative integer`, "", false, 0},
		{"exponent max_tokens is refused", `{"model":"m","max_tokens":1e3}`, `"max_tokens" must be a non-negative integer`, "", false, 0},
		{"string max_tokens is refused", `{"model":"m","max_tokens":"256"}`, `"max_tokens" must be a non-negative integer`, "", false, 0},
		{"max_tokens beyond int64 is refused", `{"model":"m","max_tokens":99999999999999999999}`, `"max_tokens" must be a non-negative integer`, "", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, aerr := parseRequest(ep, []byte(tc.body))
			if tc.wantErr != "" {
				if aerr == nil || aerr.message != tc.wantErr {
					t.Fatalf("error %v, want %q", aerr, tc.wantErr)
				}
				return
			}
			if aerr != nil {
				t.Fatal(aerr)
			}
			if q.model != tc.model || q.stream != tc.stream || q.maxTokens != tc.maxTokens {
				t.Fatalf("model %q stream %v max %d", q.model, q.stream, q.maxTokens)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	for _, tc := range []struct {
		name          string
		contentLength int64
	}{
		{"announced length", int64(len(body))},
		{"unknown length", -1},
		{"announced shorter than sent", 10},
		{"announced longer than sent", int64(len(body)) * 2},
		{"announced beyond the limit", 1 << 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readBody(iotest.HalfReader(bytes.NewReader(body)), tc.contentLength, 1<<20)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("read %d bytes, err %v", len(got), err)
			}
		})
	}
	t.Run("reader error is returned", func(t *testing.T) {
		if _, err := readBody(iotest.ErrReader(io.ErrUnexpectedEOF), 10, 1<<20); err != io.ErrUnexpectedEOF {
			t.Fatalf("err %v", err)
		}
	})
	// A head announcing 32 MiB followed by silence (a sandbox holding
	// router memory with claims): no more than initialBodyBuf is taken
	// before bytes arrive.
	t.Run("announced length is not allocated up front", func(t *testing.T) {
		const announced = 32 << 20
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		got, err := readBody(iotest.ErrReader(io.ErrUnexpectedEOF), announced, 64<<20)
		runtime.ReadMemStats(&after)
		if err != io.ErrUnexpectedEOF || len(got) != 0 {
			t.Fatalf("read %d bytes, err %v", len(got), err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 2*initialBodyBuf {
			t.Fatalf("allocated %d bytes for a body announced at %d with none sent, want at most %d", grew, announced, 2*initialBodyBuf)
		}
	})
}

// Pooled body buffers must not carry one response's bytes into another's
// usage.
func TestMeterPooledBuffersDoNotMix(t *testing.T) {
	bodies := []struct {
		body    string
		in, out int64
	}{
		{`{"id":"a","usage":{"prompt_tokens":3,"completion_tokens":4}}`, 3, 4},
		{`{"id":"b","choices":[]}`, 0, 0},
		{`{"id":"c","usage":{"prompt_tokens":30,"completion_tokens":1}}`, 30, 1},
	}
	for round := range 3 {
		for i, b := range bodies {
			m := meter{dialect: dialectOpenAI}
			for chunk := range slicesOf([]byte(b.body), 7) {
				m.Write(chunk)
			}
			m.finish()
			if m.in != b.in || m.out != b.out || m.seen != (b.in > 0) {
				t.Fatalf("round %d body %d: in %d out %d seen %v", round, i, m.in, m.out, m.seen)
			}
		}
	}
}

func slicesOf(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func TestAttemptsHeader(t *testing.T) {
	r := &Router{targets: map[Target]*targetInfo{}}
	h := &sandboxHandler{r: r}
	for _, n := range []int{0, 1, 8, 9, 123} {
		hdr := make(map[string][]string)
		h.setRouteHeaders(hdr, routeRef{name: "r"}, Target{Provider: "p", Model: "m"}, n)
		if got := hdr["X-Clawcage-Attempts"]; len(got) != 1 || got[0] != strconv.Itoa(n) {
			t.Fatalf("attempts %d: header %q", n, got)
		}
		if got := hdr["X-Clawcage-Target"]; len(got) != 1 || got[0] != "p/m" {
			t.Fatalf("target header %q", got)
		}
		if got := hdr["X-Clawcage-Route"]; len(got) != 1 || got[0] != "r" {
			t.Fatalf("route header %q", got)
		}
	}
}

func TestDirectModelName(t *testing.T) {
	ref := regexp.MustCompile(`^[A-Za-z0-9._:@+-][A-Za-z0-9._:@+/-]{0,199}$`) // the former definition
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"provider and model", "oa/gpt-4o", true},
		{"tag and version characters", "ollama/llama3.1:8b-instruct@q4+x_y", true},
		{"empty", "", false},
		{"leading slash", "/oa/gpt", false},
		{"space", "oa/gpt 4", false},
		{"newline (log injection)", "oa/gpt\nx", false},
		{"quote", `oa/gpt"`, false},
		{"non-ASCII", "oa/gpté", false},
		{"200 bytes", "a/" + strings.Repeat("b", 198), true},
		{"201 bytes", "a/" + strings.Repeat("b", 199), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := directModel(tc.in); got != tc.want || got != ref.MatchString(tc.in) {
				t.Fatalf("directModel(%q) = %v, want %v (regexp %v)", tc.in, got, tc.want, ref.MatchString(tc.in))
			}
		})
	}
}

func FuzzDirectModelName(f *testing.F) {
	ref := regexp.MustCompile(`^[A-Za-z0-9._:@+-][A-Za-z0-9._:@+/-]{0,199}$`)
	for _, s := range []string{"oa/gpt", "", "/x", "a b", strings.Repeat("x", 201)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := directModel(s), ref.MatchString(s); got != want {
			t.Fatalf("directModel(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
