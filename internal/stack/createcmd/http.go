package createcmd

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// maxBody is how much of an answer is read (as the cobra command does).
const maxBody = 4 << 20

// errNotSent reports that the request could not be written: the server has
// not acted on it, so the caller may leave the command to the cobra path.
var errNotSent = errors.New("request not sent")

// dialUnix connects a stream socket to the Unix socket at path and returns
// it as a pollable (non-blocking) file, so reads and writes take deadlines.
func dialUnix(path string) (*os.File, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errors.New("socket: " + err.Error())
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err != nil {
		syscall.Close(fd)
		return nil, errors.New("connect " + path + ": " + err.Error())
	}
	return os.NewFile(uintptr(fd), path), nil
}

// response is what roundTrip read: the status, and the body or the error
// that cut it short.
type response struct {
	code    int
	status  string // "201 Created", as net/http's Response.Status
	body    []byte // at most maxBody bytes
	bodyErr error
}

// roundTrip writes one HTTP/1.1 request (Connection: close) to c and reads
// the answer, until deadline or until cancel is closed. Errors are worded as
// net/http's client words them for the cobra command, whose messages the
// fast path repeats: `Post "http://clawcage/PATH": ...`.
func roundTrip(c *os.File, method, path string, body []byte, deadline time.Time, cancel <-chan struct{}) (*response, error) {
	var canceled atomic.Bool
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-cancel:
			canceled.Store(true)
			c.SetDeadline(time.Unix(1, 0)) // wakes a blocked read or write
		case <-stop:
		}
	}()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, errNotSent // not pollable: let the cobra command do it
	}
	req := method + " " + path + " HTTP/1.1\r\nHost: clawcage\r\nUser-Agent: clawcage\r\n" +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: close\r\n\r\n"
	if _, err := c.Write(append([]byte(req), body...)); err != nil {
		// Not all of it reached the server: an incomplete request is not
		// acted on.
		return nil, errNotSent
	}
	// A transport error, as the client reports it.
	urlErr := func(err error) error {
		switch {
		case canceled.Load():
			err = errors.New("context canceled")
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = errors.New("context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
		}
		return errors.New(method[:1] + lower(method[1:]) + " " + strconv.Quote("http://clawcage"+path) + ": " + err.Error())
	}
	bodyErr := func(err error) error {
		switch {
		case canceled.Load():
			return errors.New("context canceled")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errors.New("context deadline exceeded (Client.Timeout or context cancellation while reading body)")
		case errors.Is(err, io.EOF):
			return io.ErrUnexpectedEOF
		}
		return err
	}
	br := newLineReader(c)
	resp, chunked, length, err := readHead(br)
	if err != nil {
		return nil, urlErr(err)
	}
	if resp.code == 204 || resp.code == 304 {
		return resp, nil
	}
	var r io.Reader = br
	switch {
	case chunked:
		r = &chunkedReader{r: br}
	case length >= 0:
		r = io.LimitReader(br, length)
	}
	resp.body, err = io.ReadAll(io.LimitReader(r, maxBody))
	if err != nil {
		resp.bodyErr = bodyErr(err)
	} else if !chunked && length >= 0 && int64(len(resp.body)) < min(length, maxBody) {
		resp.bodyErr = io.ErrUnexpectedEOF
	}
	return resp, nil
}

// readHead reads the status line and the header of the final answer
// (skipping 1xx interim answers) and returns how the body is framed:
// chunked, a Content-Length, or (-1) until the connection closes.
func readHead(br *lineReader) (resp *response, chunked bool, length int64, err error) {
	for {
		line, err := br.readLine()
		if err != nil {
			return nil, false, 0, err
		}
		proto, status, ok := cut(line, " ")
		if !ok || !hasPrefix(proto, "HTTP/1.") {
			return nil, false, 0, errors.New("net/http: HTTP/1.x transport connection broken: malformed HTTP response " + strconv.Quote(line))
		}
		codeText, _, _ := cut(status, " ")
		code, err := strconv.Atoi(codeText)
		if err != nil || len(codeText) != 3 || code < 100 {
			return nil, false, 0, errors.New("net/http: HTTP/1.x transport connection broken: malformed HTTP status code " + strconv.Quote(codeText))
		}
		resp = &response{code: code, status: status}
		chunked, length = false, -1
		for {
			h, err := br.readLine()
			if err != nil {
				return nil, false, 0, err
			}
			if h == "" {
				break
			}
			k, v, ok := cut(h, ":")
			if !ok {
				return nil, false, 0, errors.New("net/http: HTTP/1.x transport connection broken: malformed MIME header line: " + h)
			}
			v = trimOWS(v)
			switch {
			case equalFoldASCII(k, "Transfer-Encoding"):
				chunked = equalFoldASCII(v, "chunked")
			case equalFoldASCII(k, "Content-Length"):
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					return nil, false, 0, errors.New("net/http: HTTP/1.x transport connection broken: bad Content-Length " + strconv.Quote(v))
				}
				length = n
			}
		}
		if code >= 200 || code == 101 {
			return resp, chunked, length, nil
		}
	}
}

// chunkedReader decodes an HTTP/1.1 chunked body (trailers are read and
// dropped).
type chunkedReader struct {
	r    *lineReader
	left int64 // bytes left in the current chunk
	done bool
}

func (cr *chunkedReader) Read(p []byte) (int, error) {
	if cr.done {
		return 0, io.EOF
	}
	if cr.left == 0 {
		line, err := cr.r.readLine()
		if err != nil {
			return 0, err
		}
		size, _, _ := cut(line, ";")
		n, err := parseChunkSize(trimOWS(size))
		if err != nil {
			return 0, err
		}
		if n == 0 {
			for { // trailer
				l, err := cr.r.readLine()
				if err != nil {
					return 0, err
				}
				if l == "" {
					break
				}
			}
			cr.done = true
			return 0, io.EOF
		}
		cr.left = n
	}
	if int64(len(p)) > cr.left {
		p = p[:cr.left]
	}
	n, err := cr.r.Read(p)
	cr.left -= int64(n)
	if cr.left == 0 && err == nil {
		var crlf [2]byte
		if _, err := io.ReadFull(cr.r, crlf[:]); err != nil || string(crlf[:]) != "\r\n" {
			return n, errors.New("malformed chunked encoding")
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// parseChunkSize parses a chunk's hexadecimal size, with net/http's errors.
func parseChunkSize(v string) (int64, error) {
	if v == "" {
		return 0, errors.New("empty hex number for chunk length")
	}
	var n int64
	for i, c := range []byte(v) {
		d, ok := hexDigit(c)
		if !ok {
			return 0, errors.New("invalid byte in chunk length")
		}
		if i == 15 {
			return 0, errors.New("http chunk length too large")
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}

// lower returns ASCII s in lower case.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
