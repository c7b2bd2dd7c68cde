// Package ipclass classifies IP addresses against the IANA IPv4 and IPv6
// special-purpose address registries (plus multicast, the IPv6 ranges IANA
// has not allocated for global unicast, and well-known cloud metadata
// addresses), so that an egress proxy can refuse to dial anything that is
// not an ordinary globally routed address. Translation and tunnelling forms
// that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4,
// Teredo) are unwrapped and the embedded address is classified too.
package ipclass

import (
	"net/netip"
	"sync"
)

// Class is the result of classifying one address.
type Class struct {
	// Special is true when the address lies in any special-purpose range;
	// an egress proxy must not dial it unless a rule names that range.
	Special bool
	// Range is the most specific special-purpose range containing the
	// address; invalid when Special is false.
	Range netip.Prefix
	// Name is a stable short name of the range ("loopback", "private", ...),
	// "global" for an ordinary address, "invalid" for the zero Addr.
	Name string
	// Embedded is the IPv4 address carried inside a translation or tunnel
	// form (ipv4-mapped, ipv4-compatible, nat64, 6to4, teredo client).
	Embedded netip.Addr
	// Inner classifies Embedded; nil when there is none.
	Inner *Class
}

// AnySpecial reports whether the address or the IPv4 address it embeds is
// special-purpose.
func (c Class) AnySpecial() bool {
	return c.Special || (c.Inner != nil && c.Inner.Special)
}

// String returns "name range", or "global".
func (c Class) String() string {
	s := c.Name
	if c.Range.IsValid() {
		s += " " + c.Range.String()
	}
	if c.Inner != nil {
		s += " embedding " + c.Embedded.String() + " (" + c.Inner.String() + ")"
	}
	return s
}

// How a range embeds an IPv4 address.
type embedding int

const (
	embedNone   embedding = iota
	embedLast32           // last 32 bits (mapped, compatible, NAT64 /96)
	embed6to4             // bits 16-47
	embedTeredo           // last 32 bits inverted (obfuscated client)
)

type entry struct {
	prefix netip.Prefix
	name   string
	embed  embedding
}

func e(p, name string) entry { return entry{netip.MustParsePrefix(p), name, embedNone} }

func w(p, name string, how embedding) entry {
	return entry{netip.MustParsePrefix(p), name, how}
}

// Entries below are listed broad first; lookup keeps the longest match.
// Sources: IANA IPv4 Special-Purpose Address Registry, IANA IPv6
// Special-Purpose Address Registry, IANA IPv6 Address Space (everything
// outside 2000::/3, fc00::/7, fe80::/10 and ff00::/8 is reserved by the
// IETF), RFC 5771 (IPv4 multicast), RFC 6052 (NAT64), RFC 3056 (6to4),
// RFC 4380 (Teredo), RFC 4291 (IPv4-compatible and -mapped).
var v4Table = []entry{
	e("0.0.0.0/8", "this-network"),
	e("0.0.0.0/32", "unspecified"),
	e("10.0.0.0/8", "private"),
	e("100.64.0.0/10", "cgnat"),
	e("100.100.100.200/32", "metadata"), // Alibaba Cloud instance metadata
	e("127.0.0.0/8", "loopback"),
	e("169.254.0.0/16", "link-local"),
	e("169.254.169.254/32", "metadata"), // AWS, GCP, Azure, OpenStack, ...
	e("168.63.129.16/32", "metadata"),   // Azure WireServer (not IANA, same risk)
	e("172.16.0.0/12", "private"),
	e("192.0.0.0/24", "ietf-protocol"),
	e("192.0.0.0/29", "ipv4-service-continuity"),
	e("192.0.0.8/32", "ipv4-dummy"),
	e("192.0.0.9/32", "pcp-anycast"),
	e("192.0.0.10/32", "turn-anycast"),
	e("192.0.0.170/31", "nat64-discovery"),
	e("192.0.0.192/32", "metadata"), // Oracle Cloud instance metadata
	e("192.0.2.0/24", "documentation"),
	e("192.31.196.0/24", "as112"),
	e("192.52.193.0/24", "amt"),
	e("192.88.99.0/24", "6to4-relay"),
	e("192.88.99.2/32", "6a44-relay"),
	e("192.168.0.0/16", "private"),
	e("192.175.48.0/24", "as112"),
	e("198.18.0.0/15", "benchmark"),
	e("198.51.100.0/24", "documentation"),
	e("203.0.113.0/24", "documentation"),
	e("224.0.0.0/4", "multicast"),
	e("240.0.0.0/4", "reserved"),
	e("255.255.255.255/32", "broadcast"),
}

var v6Table = []entry{
	// IANA IPv6 address space: not global unicast.
	e("::/8", "reserved"),
	e("100::/8", "reserved"),
	e("200::/7", "reserved"),
	e("400::/6", "reserved"),
	e("800::/5", "reserved"),
	e("1000::/4", "reserved"),
	e("4000::/3", "reserved"),
	e("6000::/3", "reserved"),
	e("8000::/3", "reserved"),
	e("a000::/3", "reserved"),
	e("c000::/3", "reserved"),
	e("e000::/4", "reserved"),
	e("f000::/5", "reserved"),
	e("f800::/6", "reserved"),
	e("fe00::/9", "reserved"),
	e("fec0::/10", "reserved"), // deprecated site-local
	// Special-purpose registry and friends.
	w("::/96", "ipv4-compatible", embedLast32),
	e("::/128", "unspecified"),
	e("::1/128", "loopback"),
	w("::ffff:0:0/96", "ipv4-mapped", embedLast32),
	w("::ffff:0:0:0/96", "ipv4-translated", embedLast32),
	w("64:ff9b::/96", "nat64", embedLast32),
	w("64:ff9b:1::/48", "nat64", embedLast32),
	e("100::/64", "discard-only"),
	e("100:0:0:1::/64", "dummy"),
	e("2001::/23", "ietf-protocol"),
	w("2001::/32", "teredo", embedTeredo),
	e("2001:1::1/128", "pcp-anycast"),
	e("2001:1::2/128", "turn-anycast"),
	e("2001:1::3/128", "dns-sd-anycast"),
	e("2001:2::/48", "benchmark"),
	e("2001:3::/32", "amt"),
	e("2001:4:112::/48", "as112"),
	e("2001:10::/28", "orchid"),
	e("2001:20::/28", "orchid"),
	e("2001:30::/28", "drip"),
	e("2001:db8::/32", "documentation"),
	w("2002::/16", "6to4", embed6to4),
	e("2620:4f:8000::/48", "as112"),
	e("3fff::/20", "documentation"),
	e("5f00::/16", "srv6-sid"),
	e("fc00::/7", "unique-local"),
	e("fd00:ec2::254/128", "metadata"), // AWS instance metadata over IPv6
	e("fe80::/10", "link-local"),
	e("ff00::/8", "multicast"),
}

// byFirstByte indexes a table by the first byte of the address: the
// entries whose prefix can contain an address starting with that byte, in
// table order. Built once at start-up, read-only afterwards.
type byFirstByte [256][]entry

func index(t []entry) *byFirstByte {
	var idx byFirstByte
	for _, en := range t {
		first := int(en.prefix.Addr().AsSlice()[0])
		n := 1
		if en.prefix.Bits() < 8 {
			n = 1 << (8 - en.prefix.Bits())
		}
		for b := first; b < first+n; b++ {
			idx[b] = append(idx[b], en)
		}
	}
	return &idx
}

// The tables indexed by first byte, built on first use (not at package
// initialization, which every clawcage start would pay for).
var (
	v4Index = sync.OnceValue(func() *byFirstByte { return index(v4Table) })
	v6Index = sync.OnceValue(func() *byFirstByte { return index(v6Table) })
)

// Classify returns the class of addr. The zero Addr and addresses with a
// zone are special ("invalid" and the zone-less address's class).
func Classify(addr netip.Addr) Class {
	if !addr.IsValid() {
		return Class{Special: true, Name: "invalid"}
	}
	addr = addr.WithZone("")
	var table []entry
	if addr.Is4() {
		table = v4Index()[addr.As4()[0]]
	} else {
		table = v6Index()[addr.As16()[0]]
	}
	var best *entry
	for i := range table {
		en := &table[i]
		if en.prefix.Contains(addr) && (best == nil || en.prefix.Bits() >= best.prefix.Bits()) {
			best = en
		}
	}
	if best == nil {
		return Class{Name: "global"}
	}
	c := Class{Special: true, Range: best.prefix, Name: best.name}
	if emb, ok := embedded(addr, best.embed); ok {
		inner := Classify(emb)
		c.Embedded, c.Inner = emb, &inner
	}
	return c
}

// embedded extracts the IPv4 address a v6 address carries.
func embedded(a netip.Addr, how embedding) (netip.Addr, bool) {
	b := a.As16()
	switch how {
	case embedLast32:
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case embed6to4:
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case embedTeredo:
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

// Ranges returns every range the classifier knows, for documentation and
// tests; the slice is a copy.
func Ranges() []Class {
	out := make([]Class, 0, len(v4Table)+len(v6Table))
	for _, t := range [][]entry{v4Table, v6Table} {
		for _, en := range t {
			out = append(out, Class{Special: true, Range: en.prefix, Name: en.name})
		}
	}
	return out
}
