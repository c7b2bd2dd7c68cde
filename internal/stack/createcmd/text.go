package createcmd

import (
	"errors"
	"io"
)

// Small text helpers: package strings (and bufio, which imports it) is
// initialized late, after most of the binary (see the package comment).

// cut is strings.Cut.
func cut(s, sep string) (before, after string, found bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

// hasPrefix is strings.HasPrefix.
func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// trimOWS removes the spaces and tabs around a header value.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFoldASCII compares a and b with ASCII letters folded.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// maxLine bounds a status, header or chunk-size line.
const maxLine = 64 << 10

// lineReader is the part of bufio.Reader the response parser needs.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	err        error
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: r, buf: make([]byte, 4096)} }

// fill reads more into the buffer; false once the source has failed.
func (lr *lineReader) fill() bool {
	if lr.err != nil {
		return false
	}
	if lr.start > 0 {
		lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
		lr.start = 0
	}
	if lr.end == len(lr.buf) {
		lr.buf = append(lr.buf, make([]byte, len(lr.buf))...)
	}
	n, err := lr.r.Read(lr.buf[lr.end:])
	lr.end += n
	if err != nil {
		lr.err = err
	}
	return n > 0 || err == nil
}

// readLine reads one LF-terminated line and returns it without "\n" or
// "\r\n". A line cut short by the end of the input is an error.
func (lr *lineReader) readLine() (string, error) {
	off := 0 // bytes after lr.start already searched
	for {
		for i := lr.start + off; i < lr.end; i++ {
			if lr.buf[i] == '\n' {
				line := lr.buf[lr.start:i]
				lr.start = i + 1
				if len(line) > 0 && line[len(line)-1] == '\r' {
					line = line[:len(line)-1]
				}
				return string(line), nil
			}
		}
		off = lr.end - lr.start
		if off > maxLine {
			return "", errors.New("header line too long")
		}
		if !lr.fill() {
			if lr.err == io.EOF && lr.end > lr.start {
				return "", io.ErrUnexpectedEOF
			}
			return "", lr.err
		}
	}
}

// Read reads buffered bytes first, then from the source.
func (lr *lineReader) Read(p []byte) (int, error) {
	if lr.start == lr.end {
		if len(p) >= len(lr.buf) && lr.err == nil {
			return lr.r.Read(p)
		}
		if !lr.fill() && lr.start == lr.end {
			return 0, lr.err
		}
	}
	n := copy(p, lr.buf[lr.start:lr.end])
	lr.start += n
	return n, nil
}
