package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// dialTimeout bounds every connection attempt: an unreachable destination
// must fail fast, and a hang is reported as Timeout rather than waited out.
const dialTimeout = 3 * time.Second

func netProbes() []Probe {
	return []Probe{
		{Name: "raw-socket", Doc: "socket(AF_INET, SOCK_RAW, ICMP)", Expect: eperm,
			Run: socketProbe(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP, "AF_INET/SOCK_RAW")},
		{Name: "packet-socket", Doc: "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)", Expect: eperm,
			Run: socketProbe(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)), "AF_PACKET/SOCK_RAW")},
		{Name: "netlink-route", Doc: "socket(AF_NETLINK, NETLINK_ROUTE): allowed, programs list interfaces with it",
			Expect: []string{Succeeded}, Run: socketProbe(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE, "NETLINK_ROUTE")},
		{Name: "netlink-audit", Doc: "socket(AF_NETLINK, NETLINK_AUDIT)", Expect: eperm,
			Run: socketProbe(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT, "NETLINK_AUDIT")},
		{Name: "netlink-uevent", Doc: "socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)", Expect: eperm,
			Run: socketProbe(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT, "NETLINK_KOBJECT_UEVENT")},
		{Name: "vsock-socket", Doc: "socket(AF_VSOCK): it reaches the VM host outside any network namespace",
			Expect: []string{"EAFNOSUPPORT"}, Run: socketProbe(unix.AF_VSOCK, unix.SOCK_STREAM, 0, "AF_VSOCK")},
		{Name: "mptcp-socket", Doc: "socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP): MPTCP bypasses Landlock's TCP rules",
			Expect: []string{"EPROTONOSUPPORT"}, Run: socketProbe(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, "IPPROTO_MPTCP")},
		{Name: "connect-tcp", Usage: "[HOST:PORT]", Doc: "TCP connect (default 1.1.1.1:443, outside the sandbox)",
			Expect: []string{"EACCES", "ENETUNREACH"}, Run: connectTCP},
		{Name: "connect-udp", Usage: "[HOST:PORT]", Doc: "UDP connect and send (default 1.1.1.1:53, a DNS server outside)",
			Expect: []string{"ENETUNREACH"}, Run: connectUDP},
		{Name: "connect-abstract", Usage: "NAME", Doc: "connect to an abstract Unix socket of the host (@NAME)",
			Expect: []string{"ECONNREFUSED", "EPERM"}, Run: connectAbstract},
		{Name: "dns", Usage: "[NAME]", Doc: "resolve a name (default example.com) as the system is configured (Go's own resolver)",
			Expect: []string{"NXDOMAIN", "ECONNREFUSED", "ENETUNREACH"}, Run: dnsLookup},
		{Name: "dns-direct", Usage: "[SERVER:PORT [NAME]]", Doc: "ask a DNS server directly (default 1.1.1.1:53), ignoring the system's configuration",
			Expect: []string{"ENETUNREACH", "ECONNREFUSED"}, Run: dnsDirect},
		{Name: "net-interfaces", Doc: "list network interfaces: only lo may exist", Expect: []string{LoopbackOnly}, Run: netInterfaces},
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func socketProbe(domain, typ, proto int, what string) func(context.Context, []string) Observation {
	return func(context.Context, []string) Observation {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return observe(err, "socket "+what)
		}
		unix.Close(fd)
		return Observation{Outcome: Succeeded, Detail: "opened a " + what + " socket"}
	}
}

func connectTCP(ctx context.Context, args []string) Observation {
	addr := argOr(args, 0, "1.1.1.1:443")
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			// A name: the sandbox has no resolver that knows it.
			return Observation{Outcome: "NXDOMAIN", Detail: "connect tcp " + addr + ": " + de.Error()}
		}
		return observe(err, "connect tcp "+addr)
	}
	c.Close()
	return Observation{Outcome: Succeeded, Detail: "connected to " + addr}
}

func connectUDP(ctx context.Context, args []string) Observation {
	addr := argOr(args, 0, "1.1.1.1:53")
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return observe(err, "connect udp "+addr)
	}
	defer c.Close()
	if _, err := c.Write([]byte("clawcage-audit")); err != nil {
		return observe(err, "send udp to "+addr)
	}
	return Observation{Outcome: Succeeded, Detail: "sent a datagram to " + addr}
}

func connectAbstract(ctx context.Context, args []string) Observation {
	if len(args) != 1 || strings.TrimPrefix(args[0], "@") == "" {
		return errorf("usage: connect-abstract NAME")
	}
	name := "@" + strings.TrimPrefix(args[0], "@")
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", name)
	if err != nil {
		return observe(err, "connect unix "+name)
	}
	c.Close()
	return Observation{Outcome: Succeeded, Detail: "connected to abstract socket " + name}
}

func dnsLookup(ctx context.Context, args []string) Observation {
	return resolve(ctx, &net.Resolver{PreferGo: true, StrictErrors: true}, argOr(args, 0, "example.com"))
}

func dnsDirect(ctx context.Context, args []string) Observation {
	// A hand-made query: no resolver configuration (nsswitch.conf,
	// resolv.conf) is consulted, as an exfiltrating attacker would do it.
	server := argOr(args, 0, "1.1.1.1:53")
	name := argOr(args, 1, "example.com")
	q, err := dnsmessage.NewName(strings.TrimSuffix(name, ".") + ".")
	if err != nil {
		return errorf("dns-direct: name %q: %v", name, err)
	}
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(os.Getpid()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	pkt, err := msg.Pack()
	if err != nil {
		return errorf("dns-direct: pack query: %v", err)
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return observe(err, "dns query to "+server)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := c.Write(pkt); err != nil {
		return observe(err, "dns query to "+server)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return observe(err, "dns answer from "+server)
	}
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("%s answered the query for %s with %d bytes", server, name, n)}
}

func resolve(ctx context.Context, r *net.Resolver, name string) Observation {
	ctx, cancel := context.WithTimeout(ctx, 2*dialTimeout)
	defer cancel()
	conf := "no /etc/resolv.conf"
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		conf = "/etc/resolv.conf present"
	}
	addrs, err := r.LookupHost(ctx, name)
	if err == nil {
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("%s resolved to %v (%s)", name, addrs, conf)}
	}
	o := observe(err, "resolve "+name+" ("+conf+")")
	var de *net.DNSError
	if o.Outcome == Error && errors.As(err, &de) {
		// The resolver flattens the socket error into text.
		switch {
		case de.IsTimeout:
			o.Outcome = Timeout
		case de.IsNotFound:
			o.Outcome = "NXDOMAIN"
		case strings.Contains(de.Err, "connection refused"):
			o.Outcome = "ECONNREFUSED"
		case strings.Contains(de.Err, "network is unreachable"):
			o.Outcome = "ENETUNREACH"
		case strings.Contains(de.Err, "permission denied"):
			o.Outcome = "EACCES"
		}
	}
	return o
}

func netInterfaces(context.Context, []string) Observation {
	ifs, err := net.Interfaces()
	if err != nil {
		return observe(err, "list interfaces")
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	if len(names) == 1 && names[0] == "lo" {
		return Observation{Outcome: LoopbackOnly, Detail: "interfaces: lo"}
	}
	return Observation{Outcome: Succeeded, Detail: "interfaces: " + strings.Join(names, ",")}
}
