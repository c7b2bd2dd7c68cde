package ipclass

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		addr      string
		special   bool
		class     string
		rng       string
		inner     string // class of the embedded IPv4 address, "" if none
		innerAddr string
	}{
		// IPv4 special-purpose registry, one row per range.
		{"this network", "0.1.2.3", true, "this-network", "0.0.0.0/8", "", ""},
		{"unspecified v4", "0.0.0.0", true, "unspecified", "0.0.0.0/32", "", ""},
		{"private 10/8", "10.1.2.3", true, "private", "10.0.0.0/8", "", ""},
		{"cgnat", "100.64.0.1", true, "cgnat", "100.64.0.0/10", "", ""},
		{"cgnat top", "100.127.255.255", true, "cgnat", "100.64.0.0/10", "", ""},
		{"alibaba metadata", "100.100.100.200", true, "metadata", "100.100.100.200/32", "", ""},
		{"loopback", "127.0.0.1", true, "loopback", "127.0.0.0/8", "", ""},
		{"loopback other", "127.255.0.9", true, "loopback", "127.0.0.0/8", "", ""},
		{"link-local", "169.254.1.1", true, "link-local", "169.254.0.0/16", "", ""},
		{"cloud metadata", "169.254.169.254", true, "metadata", "169.254.169.254/32", "", ""},
		{"azure wireserver", "168.63.129.16", true, "metadata", "168.63.129.16/32", "", ""},
		{"private 172.16/12", "172.31.255.1", true, "private", "172.16.0.0/12", "", ""},
		{"ietf protocol assignments", "192.0.0.100", true, "ietf-protocol", "192.0.0.0/24", "", ""},
		{"ipv4 service continuity", "192.0.0.1", true, "ipv4-service-continuity", "192.0.0.0/29", "", ""},
		{"ipv4 dummy", "192.0.0.8", true, "ipv4-dummy", "192.0.0.8/32", "", ""},
		{"pcp anycast v4", "192.0.0.9", true, "pcp-anycast", "192.0.0.9/32", "", ""},
		{"turn anycast v4", "192.0.0.10", true, "turn-anycast", "192.0.0.10/32", "", ""},
		{"nat64 discovery", "192.0.0.171", true, "nat64-discovery", "192.0.0.170/31", "", ""},
		{"oracle metadata", "192.0.0.192", true, "metadata", "192.0.0.192/32", "", ""},
		{"documentation test-net-1", "192.0.2.1", true, "documentation", "192.0.2.0/24", "", ""},
		{"as112 v4", "192.31.196.1", true, "as112", "192.31.196.0/24", "", ""},
		{"amt v4", "192.52.193.1", true, "amt", "192.52.193.0/24", "", ""},
		{"6to4 relay anycast", "192.88.99.1", true, "6to4-relay", "192.88.99.0/24", "", ""},
		{"6a44 relay anycast", "192.88.99.2", true, "6a44-relay", "192.88.99.2/32", "", ""},
		{"private 192.168/16", "192.168.1.1", true, "private", "192.168.0.0/16", "", ""},
		{"as112 direct delegation", "192.175.48.1", true, "as112", "192.175.48.0/24", "", ""},
		{"benchmark", "198.19.255.1", true, "benchmark", "198.18.0.0/15", "", ""},
		{"documentation test-net-2", "198.51.100.7", true, "documentation", "198.51.100.0/24", "", ""},
		{"documentation test-net-3", "203.0.113.7", true, "documentation", "203.0.113.0/24", "", ""},
		{"multicast", "224.0.0.251", true, "multicast", "224.0.0.0/4", "", ""},
		{"multicast top", "239.255.255.250", true, "multicast", "224.0.0.0/4", "", ""},
		{"reserved class e", "240.0.0.1", true, "reserved", "240.0.0.0/4", "", ""},
		{"limited broadcast", "255.255.255.255", true, "broadcast", "255.255.255.255/32", "", ""},
		// Ordinary v4 addresses, including neighbours of special ranges.
		{"global v4", "93.184.216.34", false, "global", "", "", ""},
		{"below cgnat", "100.63.255.255", false, "global", "", "", ""},
		{"above cgnat", "100.128.0.0", false, "global", "", "", ""},
		{"between private 172", "172.32.0.1", false, "global", "", "", ""},
		{"below benchmark", "198.17.255.255", false, "global", "", "", ""},
		{"just below 192.0.0.0/24", "191.255.255.255", false, "global", "", "", ""},
		{"just above 192.0.0.0/24", "192.0.1.1", false, "global", "", "", ""},
		// IPv6 special-purpose registry.
		{"unspecified v6", "::", true, "unspecified", "::/128", "", ""},
		{"loopback v6", "::1", true, "loopback", "::1/128", "", ""},
		{"ipv4-mapped loopback", "::ffff:127.0.0.1", true, "ipv4-mapped", "::ffff:0.0.0.0/96", "loopback", "127.0.0.1"},
		{"ipv4-mapped global", "::ffff:8.8.8.8", true, "ipv4-mapped", "::ffff:0.0.0.0/96", "global", "8.8.8.8"},
		{"ipv4-compatible metadata", "::169.254.169.254", true, "ipv4-compatible", "::/96", "metadata", "169.254.169.254"},
		{"ipv4-translated private", "::ffff:0:10.0.0.1", true, "ipv4-translated", "::ffff:0:0:0/96", "private", "10.0.0.1"},
		{"nat64 loopback", "64:ff9b::7f00:1", true, "nat64", "64:ff9b::/96", "loopback", "127.0.0.1"},
		{"nat64 metadata", "64:ff9b::169.254.169.254", true, "nat64", "64:ff9b::/96", "metadata", "169.254.169.254"},
		{"nat64 global", "64:ff9b::8.8.8.8", true, "nat64", "64:ff9b::/96", "global", "8.8.8.8"},
		{"local-use nat64 private", "64:ff9b:1::a00:1", true, "nat64", "64:ff9b:1::/48", "private", "10.0.0.1"},
		{"discard only", "100::1", true, "discard-only", "100::/64", "", ""},
		{"dummy prefix", "100:0:0:1::1", true, "dummy", "100:0:0:1::/64", "", ""},
		{"ietf protocol assignments v6", "2001:5::1", true, "ietf-protocol", "2001::/23", "", ""},
		// Teredo: server 65.54.227.120, client 192.168.1.1 obfuscated (3f57:fefe).
		{"teredo private client", "2001:0:4136:e378:8000:63bf:3f57:fefe", true, "teredo", "2001::/32", "private", "192.168.1.1"},
		{"teredo loopback client", "2001:0:4136:e378::80ff:fffe", true, "teredo", "2001::/32", "loopback", "127.0.0.1"},
		{"pcp anycast v6", "2001:1::1", true, "pcp-anycast", "2001:1::1/128", "", ""},
		{"turn anycast v6", "2001:1::2", true, "turn-anycast", "2001:1::2/128", "", ""},
		{"dns-sd anycast v6", "2001:1::3", true, "dns-sd-anycast", "2001:1::3/128", "", ""},
		{"benchmark v6", "2001:2::1", true, "benchmark", "2001:2::/48", "", ""},
		{"amt v6", "2001:3::1", true, "amt", "2001:3::/32", "", ""},
		{"as112 v6", "2001:4:112::1", true, "as112", "2001:4:112::/48", "", ""},
		{"orchid", "2001:10::1", true, "orchid", "2001:10::/28", "", ""},
		{"orchid v2", "2001:20::1", true, "orchid", "2001:20::/28", "", ""},
		{"drip", "2001:30::1", true, "drip", "2001:30::/28", "", ""},
		{"documentation v6", "2001:db8::1", true, "documentation", "2001:db8::/32", "", ""},
		{"6to4 loopback", "2002:7f00:1::1", true, "6to4", "2002::/16", "loopback", "127.0.0.1"},
		{"6to4 metadata", "2002:a9fe:a9fe::", true, "6to4", "2002::/16", "metadata", "169.254.169.254"},
		{"6to4 global", "2002:808:808::1", true, "6to4", "2002::/16", "global", "8.8.8.8"},
		{"as112 v6 direct", "2620:4f:8000::1", true, "as112", "2620:4f:8000::/48", "", ""},
		{"documentation 3fff", "3fff:1::1", true, "documentation", "3fff::/20", "", ""},
		{"srv6 sids", "5f00::1", true, "srv6-sid", "5f00::/16", "", ""},
		{"unique local", "fd12:3456::1", true, "unique-local", "fc00::/7", "", ""},
		{"aws v6 metadata", "fd00:ec2::254", true, "metadata", "fd00:ec2::254/128", "", ""},
		{"link-local v6", "fe80::1", true, "link-local", "fe80::/10", "", ""},
		{"site-local deprecated", "fec0::1", true, "reserved", "fec0::/10", "", ""},
		{"multicast v6", "ff02::1", true, "multicast", "ff00::/8", "", ""},
		{"unallocated 4000::/3", "4000::1", true, "reserved", "4000::/3", "", ""},
		{"unallocated e000::/4", "e000::1", true, "reserved", "e000::/4", "", ""},
		{"reserved ::/8", "::1:2:3:4:5", true, "reserved", "::/8", "", ""},
		// Ordinary v6.
		{"global v6", "2606:4700::1111", false, "global", "", "", ""},
		{"global v6 next to teredo", "2001:4860:4860::8888", false, "global", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Classify(netip.MustParseAddr(tt.addr))
			if c.Special != tt.special || c.Name != tt.class {
				t.Fatalf("Classify(%s) = %v special=%v; want %s special=%v", tt.addr, c, c.Special, tt.class, tt.special)
			}
			if tt.rng == "" {
				if c.Range.IsValid() {
					t.Fatalf("Classify(%s).Range = %v; want none", tt.addr, c.Range)
				}
			} else if c.Range != netip.MustParsePrefix(tt.rng) {
				t.Fatalf("Classify(%s).Range = %v; want %s", tt.addr, c.Range, tt.rng)
			}
			if tt.inner == "" {
				if c.Inner != nil {
					t.Fatalf("Classify(%s) has inner %v; want none", tt.addr, c.Inner)
				}
				return
			}
			if c.Inner == nil || c.Inner.Name != tt.inner || c.Embedded != netip.MustParseAddr(tt.innerAddr) {
				t.Fatalf("Classify(%s) = %v; want embedded %s (%s)", tt.addr, c, tt.innerAddr, tt.inner)
			}
			if !c.AnySpecial() {
				t.Fatalf("Classify(%s).AnySpecial() = false", tt.addr)
			}
		})
	}
}

// TestEveryRangeCovered checks that every table entry is reached: the
// first and last address of each range classify as that range or a more
// specific one nested inside it, never as global.
func TestEveryRangeCovered(t *testing.T) {
	for _, r := range Ranges() {
		first := r.Range.Addr()
		last := lastAddr(r.Range)
		for _, a := range []netip.Addr{first, last} {
			c := Classify(a)
			if !c.Special || c.Range.Bits() < r.Range.Bits() {
				t.Errorf("%s (%s): Classify(%s) = %v", r.Name, r.Range, a, c)
			}
		}
	}
}

func TestInvalidAddress(t *testing.T) {
	c := Classify(netip.Addr{})
	if !c.Special || c.Name != "invalid" {
		t.Fatalf("Classify(zero) = %+v; want special invalid", c)
	}
	c = Classify(netip.MustParseAddr("fe80::1%eth0"))
	if !c.Special || c.Name != "link-local" {
		t.Fatalf("Classify(zoned) = %+v; want link-local", c)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func BenchmarkClassify(b *testing.B) {
	addrs := []netip.Addr{
		netip.MustParseAddr("93.184.216.34"),
		netip.MustParseAddr("2606:4700::1111"),
		netip.MustParseAddr("64:ff9b::7f00:1"),
	}
	for i := 0; b.Loop(); i++ {
		_ = Classify(addrs[i%len(addrs)])
	}
}
