package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
)

// serveLeanFloor is the lean Go floor: the least a Go HTTP/1.1 proxy can
// do per request without the net/http server and client. One goroutine per
// client connection parses the request with http.ReadRequest, sends it on
// its own keep-alive upstream connection, parses the response head with
// http.ReadResponse and relays the body read by read (chunked when the
// upstream's length is unknown). No hygiene, policy, metering or logging,
// no client-disconnect watch, one P unless GOMAXPROCS is set (as the
// router). What is left between it and the router is the router's own
// work and net/http's server; between it and nginx, the Go runtime.
func serveLeanFloor(upstream, listen string) error {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("lean floor upstream: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go leanFloorConn(c, u)
	}
}

func leanFloorConn(c net.Conn, up *url.URL) {
	defer c.Close()
	br, bw := bufio.NewReaderSize(c, 16<<10), bufio.NewWriterSize(c, 16<<10)
	var uc net.Conn
	var ubr *bufio.Reader
	var ubw *bufio.Writer
	defer func() {
		if uc != nil {
			uc.Close()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		if uc == nil {
			if uc, err = net.Dial("tcp", up.Host); err != nil {
				return
			}
			ubr, ubw = bufio.NewReaderSize(uc, 16<<10), bufio.NewWriterSize(uc, 16<<10)
		}
		fmt.Fprintf(ubw, "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			req.Method, up.Path, req.URL.Path[len("/v1"):], up.Host, len(body))
		ubw.Write(body)
		if ubw.Flush() != nil {
			return
		}
		resp, err := http.ReadResponse(ubr, req)
		if err != nil {
			return
		}
		chunked := resp.ContentLength < 0
		fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Type: %s\r\n", resp.Status, resp.Header.Get("Content-Type"))
		if chunked {
			bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		} else {
			bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n\r\n")
		}
		for {
			n, rerr := resp.Body.Read(buf)
			if rerr != nil && rerr != io.EOF {
				return
			}
			if n > 0 && chunked {
				bw.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n")
				bw.Write(buf[:n])
				bw.WriteString("\r\n")
			} else if n > 0 {
				bw.Write(buf[:n])
			}
			if rerr == io.EOF {
				break
			}
			if bw.Flush() != nil {
				return
			}
		}
		resp.Body.Close()
		if chunked {
			bw.WriteString("0\r\n\r\n")
		}
		if bw.Flush() != nil {
			return
		}
	}
}
