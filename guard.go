package webhook

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrBlockedDestination is returned (wrapped) when a delivery's destination
// resolves to an address that is not allowed. Its text and any wrapping never
// include the address or port.
var ErrBlockedDestination = errors.New("webhook: destination address is not allowed")

// blockedPrefixes holds every destination that is not globally reachable: the
// entries of the IANA IPv4 and IPv6 Special-Purpose Address Registries that
// are not, plus multicast, the deprecated site-local block and the IPv6 forms
// that carry an IPv4 address. A few registry entries marked globally reachable
// are blocked too, because they sit inside a block named here and no webhook
// receiver lives on them (192.0.0.9, 192.0.0.10, 64:ff9b::/96 and the anycast,
// AMT, AS112, ORCHIDv2 and DET prefixes in 2001::/23).
//
// isPublicAddr also refuses all IPv6 outside global unicast 2000::/3, which
// covers the rest of the space the IETF keeps reserved; the entries below that
// lie outside 2000::/3 are listed anyway so the list reads against the
// registries.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network", including the unspecified 0.0.0.0
	netip.MustParsePrefix("10.0.0.0/8"),      // private use (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local
	netip.MustParsePrefix("172.16.0.0/12"),   // private use (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments, whole block
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (TEST-NET-1)
	netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast (RFC 7526)
	netip.MustParsePrefix("192.168.0.0/16"),  // private use (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation (TEST-NET-2)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation (TEST-NET-3)
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, including broadcast 255.255.255.255

	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("::1/128"),        // loopback
	netip.MustParsePrefix("::/96"),          // IPv4-compatible (deprecated), carries an IPv4 address
	netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped, carries an IPv4 address
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 well-known prefix, carries an IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use IPv4/IPv6 translation, carries an IPv4 address
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001::/23"),      // IETF protocol assignments: Teredo 2001::/32 (carries an IPv4 address), benchmarking 2001:2::/48, ORCHID 2001:10::/28, ORCHIDv2 2001:20::/28, ...
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("2002::/16"),      // 6to4, carries an IPv4 address
	netip.MustParsePrefix("3fff::/20"),      // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),      // SRv6 segment identifiers (RFC 9602)
	netip.MustParsePrefix("fc00::/7"),       // unique local
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

// globalUnicast6 is the only IPv6 space allocated for global unicast.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// metadataAddrs are cloud instance-metadata and host-agent endpoints, which
// hand out credentials. They stay blocked whatever AllowNetworks says.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),   // AWS, Azure, GCP, Oracle, Akamai, OpenStack, ...
	netip.MustParseAddr("169.254.170.2"),     // AWS ECS task metadata and credentials
	netip.MustParseAddr("169.254.170.23"),    // AWS EKS Pod Identity Agent
	netip.MustParseAddr("100.100.100.200"),   // Alibaba Cloud
	netip.MustParseAddr("168.63.129.16"),     // Azure WireServer (a public address, so only this list blocks it)
	netip.MustParseAddr("fd00:ec2::254"),     // AWS over IPv6
	netip.MustParseAddr("fd00:ec2::23"),      // AWS EKS Pod Identity Agent over IPv6
	netip.MustParseAddr("fd00:a9fe:a9fe::1"), // Akamai (Linode) over IPv6
	netip.MustParseAddr("fe80::a9fe:a9fe"),   // OpenStack over IPv6
}

// netGuard decides which addresses deliveries may connect to. By default only
// public addresses are allowed; allow opens exact ranges, such as loopback for
// development and tests.
type netGuard struct {
	allow []netip.Prefix
}

// newGuard returns a guard that also allows the ranges in allow, each a CIDR
// such as "127.0.0.0/8" or a bare IP address, taken as a /32 or /128. A bad
// entry is reported as a *ValidationError for the field "AllowNetworks[i]".
func newGuard(allow []string) (*netGuard, error) {
	g := &netGuard{allow: make([]netip.Prefix, 0, len(allow))}
	for i, s := range allow {
		p, ok := parseAllowEntry(s)
		if !ok {
			return nil, invalid(fmt.Sprintf("AllowNetworks[%d]", i), "%q is not a CIDR or an IP address", s)
		}
		g.allow = append(g.allow, p)
	}
	return g, nil
}

// parseAllowEntry parses a CIDR or a bare IP address without a zone.
func parseAllowEntry(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// allowed reports whether deliveries may connect to a. Metadata endpoints are
// never allowed; any other address is allowed if AllowNetworks covers it or it
// is public. An IPv4-mapped address must pass both as itself and unmapped, so
// ::ffff:127.0.0.1 is blocked as a mapped address and as loopback.
func (g *netGuard) allowed(a netip.Addr) bool {
	a = a.WithZone("") // Prefix.Contains never matches an address with a zone
	if !a.IsValid() {
		return false
	}
	return g.permits(a) && g.permits(a.Unmap())
}

// permits applies the policy to a single form of an address.
func (g *netGuard) permits(a netip.Addr) bool {
	if slices.Contains(metadataAddrs, a) {
		return false
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return isPublicAddr(a)
}

// isPublicAddr reports whether a is globally reachable.
func isPublicAddr(a netip.Addr) bool {
	if a.Is6() && !globalUnicast6.Contains(a) {
		return false
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// control is for net.Dialer.Control. It runs after name resolution on every
// connection attempt, with address the numeric host:port about to be dialled,
// and returns ErrBlockedDestination, unwrapped, if that address is not
// allowed. An address it cannot parse is blocked.
func (g *netGuard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !g.allowed(ap.Addr()) {
		return ErrBlockedDestination
	}
	return nil
}

// checkHost is for registration. It returns ErrBlockedDestination if host, as
// returned by url.URL.Hostname, is an IP literal of an address that is not
// allowed, or is "localhost" or a name under ".localhost" while loopback is
// not allowed. IPv4 literals count in every spelling the C library accepts
// (see parseInetAton), such as "2130706433", "0x7f.1", "0177.0.0.1" and
// "127.1". Other names return nil: they are checked when dialled.
func (g *netGuard) checkHost(host string) error {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	if a, ok := parseHostLiteral(host); ok {
		if !g.allowed(a) {
			return ErrBlockedDestination
		}
		return nil
	}
	name := strings.ToLower(host)
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		if !g.allowed(netip.AddrFrom4([4]byte{127, 0, 0, 1})) && !g.allowed(netip.IPv6Loopback()) {
			return ErrBlockedDestination
		}
	}
	return nil
}

// parseHostLiteral parses host as an IPv6 literal, with or without a zone, or
// as an IPv4 literal in any spelling that inet_aton accepts.
func parseHostLiteral(host string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true
	}
	return parseInetAton(host)
}

// parseInetAton parses s as inet_aton(3) does, which is how the C library, and
// so Go's cgo resolver and most other software, reads IPv4 literals: one to
// four parts separated by dots, each decimal, octal with a leading "0" or
// hexadecimal with a leading "0x", the last part filling all the bytes that
// remain. So "2130706433", "0x7f.1", "0177.0.0.1" and "127.1" are all
// 127.0.0.1. net.ParseIP and netip.ParseAddr accept only the dotted-quad form.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.SplitN(s, ".", 5)
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var ip uint64
	for i, p := range parts {
		v, ok := parseInetAtonPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if v > 0xff {
				return netip.Addr{}, false
			}
			ip |= v << (24 - 8*i)
			continue
		}
		if v >= 1<<(32-8*i) {
			return netip.Addr{}, false
		}
		ip |= v
	}
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), true
}

// parseInetAtonPart parses one part of an inet_aton literal: a non-empty run
// of decimal digits, or "0" then octal digits, or "0x" or "0X" then at least
// one hexadecimal digit, worth at most 2³²-1.
func parseInetAtonPart(s string) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := hexDigit(s[i])
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > math.MaxUint32 {
			return 0, false
		}
	}
	return v, true
}

// hexDigit returns the value of the hexadecimal digit c, or 16 if c is not one.
func hexDigit(c byte) uint64 {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0')
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10
	}
	return 16
}

// dialer returns a dialer that checks every address it connects to, after
// name resolution, with g.control.
func (g *netGuard) dialer() *net.Dialer {
	return &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control:   g.control,
	}
}

// dialContext is for http.Transport.DialContext. It dials with g.dialer, with
// two differences. A host that is an IPv4 literal in an inet_aton spelling is
// dialled as that address, so "http://2130706433/" means 127.0.0.1 whichever
// resolver Go uses (Go's own resolver would otherwise treat it as a name).
// And a blocked dial returns an error that does not contain the address or
// port, which net.OpError would otherwise add.
func (g *netGuard) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(address); err == nil {
		if a, ok := parseInetAton(host); ok {
			address = net.JoinHostPort(a.String(), port)
		}
	}
	conn, err := g.dialer().DialContext(ctx, network, address)
	if errors.Is(err, ErrBlockedDestination) {
		return nil, fmt.Errorf("dial %s: %w", network, ErrBlockedDestination)
	}
	return conn, err
}
