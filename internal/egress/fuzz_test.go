package egress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/hostport"
)

// captureClientHello returns the first flight crypto/tls sends for serverName.
func captureClientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake() //nolint:gosec // capture only
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestPeekClientHello(t *testing.T) {
	hello := captureClientHello(t, "api.example.com")
	// The same hello split over two records, as some clients send it.
	body := hello[5:]
	split := append([]byte{0x16, 3, 1, 0, 10}, body[:10]...)
	split = append(split, 0x16, 3, 1, byte((len(body)-10)>>8), byte(len(body)-10))
	split = append(split, body[10:]...)
	cases := []struct {
		name    string
		in      []byte
		wantSNI string
		wantErr bool
	}{
		{"crypto/tls hello", hello, "api.example.com", false},
		{"hello split over records", split, "api.example.com", false},
		{"no SNI", captureClientHello(t, ""), "", false},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), "", true},
		{"truncated", hello[:40], "", true},
		{"zero-length record", []byte{0x16, 3, 1, 0, 0}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(bytes.NewReader(tc.in), 20<<10)
			ch, err := peekClientHello(br)
			if (err != nil) != tc.wantErr || ch.sni != tc.wantSNI {
				t.Fatalf("sni %q err %v, want %q err %v", ch.sni, err, tc.wantSNI, tc.wantErr)
			}
			if err == nil && br.Buffered() != len(tc.in) {
				t.Fatalf("peek consumed bytes: %d buffered of %d", br.Buffered(), len(tc.in))
			}
		})
	}
}

func FuzzClientHello(f *testing.F) {
	f.Add(captureClientHello(f, "api.example.com"))
	f.Add(captureClientHello(f, ""))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 20<<10)
		ch, err := peekClientHello(br)
		if err == nil && ch.sni != "" && len(ch.sni) > len(b) {
			t.Fatalf("sni longer than input")
		}
	})
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range [][3]string{
		{"CONNECT", "api.example.com:443", "api.example.com:443"},
		{"CONNECT", "[::1]:443", ""},
		{"CONNECT", "::1:443", ""},
		{"CONNECT", "2130706433:443", ""},
		{"GET", "http://0x7f.1/", "0x7f.1"},
		{"GET", "http://[::ffff:127.0.0.1]:80/a", "[::ffff:127.0.0.1]"},
		{"GET", "http://a.example/%2e%2e/", "b.example"},
		{"GET", "http://user@a.example/", ""},
		{"POST", "HTTP://A.EXAMPLE./x", "a.example"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, method, uri, host string) {
		var hosts []string
		if host != "" {
			hosts = []string{host}
		}
		tg, err := parseTarget(method, uri, hosts)
		if err != nil {
			return
		}
		if tg.port < 1 || tg.port > 65535 || tg.host == "" {
			t.Fatalf("accepted %q %q as %+v", method, uri, tg)
		}
		if tg.connect != (method == "CONNECT") {
			t.Fatalf("connect flag %v for method %q", tg.connect, method)
		}
		// Whatever was accepted must survive normalisation or be refused
		// there: never be a numeric trick that normalises to an address.
		if h, err := hostport.NormalizeHost(tg.host); err == nil && h == "" {
			t.Fatalf("empty normalised host for %q", tg.host)
		}
	})
}

// FuzzHostHeaders: the allocation-free Host line scan agrees with a plain
// split of the block.
func FuzzHostHeaders(f *testing.F) {
	for _, s := range []string{
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET http://a/ HTTP/1.1\nhost:a\nHOST: \tb \n\n",
		"GET http://a/ HTTP/1.1\r\nX-Host: c\r\nHost:\r\nHost",
		"no newline",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, block []byte) {
		var want []string
		lines := strings.Split(string(block), "\n")
		for _, l := range lines[1:] {
			l = strings.TrimRight(l, "\r")
			if len(l) >= 5 && strings.EqualFold(l[:5], "host:") {
				want = append(want, strings.Trim(l[5:], " \t"))
			}
		}
		if got := hostHeaders(block); !slices.Equal(got, want) {
			t.Fatalf("hostHeaders(%q) = %q, want %q", block, got, want)
		}
	})
}
