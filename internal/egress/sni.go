package egress

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
)

// clientHello is what the proxy needs from a TLS ClientHello.
type clientHello struct {
	sni    string // server_name host_name, "" if absent
	hasECH bool   // encrypted_client_hello extension present
}

var errNotTLS = errors.New("first bytes are not a TLS handshake record")

// peekClientHello parses the TLS ClientHello at the start of br without
// consuming it (the bytes are forwarded unchanged). A ClientHello split
// over several records is reassembled, up to br's buffer size.
func peekClientHello(br *bufio.Reader) (clientHello, error) {
	var msg []byte
	off := 0
	need := -1 // handshake message length incl. 4-byte header, once known
	for need < 0 || len(msg) < need {
		hdr, err := br.Peek(off + 5)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return clientHello{}, errors.New("ClientHello too large")
			}
			return clientHello{}, fmt.Errorf("read ClientHello: %w", err)
		}
		h := hdr[off:]
		if h[0] != 0x16 || h[1] != 3 {
			return clientHello{}, errNotTLS
		}
		n := int(binary.BigEndian.Uint16(h[3:5]))
		if n == 0 || n > 1<<14 {
			return clientHello{}, fmt.Errorf("TLS record length %d", n)
		}
		rec, err := br.Peek(off + 5 + n)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return clientHello{}, errors.New("ClientHello too large")
			}
			return clientHello{}, fmt.Errorf("read ClientHello: %w", err)
		}
		msg = append(msg, rec[off+5:]...)
		off += 5 + n
		if need < 0 && len(msg) >= 4 {
			if msg[0] != 1 {
				return clientHello{}, fmt.Errorf("handshake message type %d is not ClientHello", msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > 1<<16 {
				return clientHello{}, fmt.Errorf("ClientHello of %d bytes is too large", need)
			}
		}
	}
	return parseClientHello(msg[4:need])
}

// parseClientHello parses a ClientHello body (after the 4-byte handshake
// header).
func parseClientHello(b []byte) (clientHello, error) {
	var ch clientHello
	r := reader(b)
	if !r.skip(2+32) || !r.skipVec8() || !r.skipVec16() || !r.skipVec8() {
		return ch, errors.New("truncated ClientHello")
	}
	if len(r) == 0 {
		return ch, nil // no extensions
	}
	exts, ok := r.vec16()
	if !ok || len(r) != 0 {
		return ch, errors.New("malformed ClientHello extensions")
	}
	seen := map[uint16]bool{}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return ch, errors.New("malformed ClientHello extension")
		}
		if seen[typ] {
			return ch, fmt.Errorf("duplicate ClientHello extension %d", typ)
		}
		seen[typ] = true
		switch typ {
		case 0: // server_name
			list, ok := data.vec16()
			if !ok || len(data) != 0 {
				return ch, errors.New("malformed server_name extension")
			}
			for len(list) > 0 {
				nt, ok1 := list.u8()
				name, ok2 := list.vec16()
				if !ok1 || !ok2 {
					return ch, errors.New("malformed server_name entry")
				}
				if nt == 0 {
					if ch.sni != "" {
						return ch, errors.New("several host names in server_name")
					}
					if len(name) == 0 {
						return ch, errors.New("empty server_name")
					}
					ch.sni = string(name)
				}
			}
		case 0xfe0d: // encrypted_client_hello
			ch.hasECH = true
		}
	}
	return ch, nil
}

// reader is a minimal TLS wire-format reader.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) vec8() (reader, bool) {
	n, ok := r.u8()
	if !ok || len(*r) < int(n) {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok || len(*r) < int(n) {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec8() bool  { _, ok := r.vec8(); return ok }
func (r *reader) skipVec16() bool { _, ok := r.vec16(); return ok }
