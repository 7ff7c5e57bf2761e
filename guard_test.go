package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// guardChildEnv marks a test binary started by TestGuardResolvers.
const guardChildEnv = "WEBHOOK_GUARD_TEST_CHILD"

func newTestGuard(t testing.TB, allow ...string) *netGuard {
	t.Helper()
	g, err := newGuard(allow)
	require.NoError(t, err)
	return g
}

func TestNewGuard(t *testing.T) {
	g := newTestGuard(t, "127.0.0.0/8", "::1/128", "10.1.2.3", "fd00::1", "192.168.1.7/16")
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("fd00::1/128"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}, g.allow)

	tests := []struct {
		allow []string
		field string
	}{
		{[]string{"nonsense"}, "AllowNetworks[0]"},
		{[]string{""}, "AllowNetworks[0]"},
		{[]string{"127.0.0.0/8", "10.0.0.0/33"}, "AllowNetworks[1]"},
		{[]string{" 10.0.0.0/8"}, "AllowNetworks[0]"},
		{[]string{"10.0.0.0/8/8"}, "AllowNetworks[0]"},
		{[]string{"fe80::1%eth0"}, "AllowNetworks[0]"},
		{[]string{"fe80::%eth0/10"}, "AllowNetworks[0]"},
		{[]string{"2130706433"}, "AllowNetworks[0]"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.allow, ","), func(t *testing.T) {
			_, err := newGuard(tt.allow)
			var verr *ValidationError
			require.ErrorAs(t, err, &verr)
			require.Equal(t, tt.field, verr.Field)
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestGuardAllowed(t *testing.T) {
	metadata := []string{
		"169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200", "168.63.129.16",
		"fd00:ec2::254", "fd00:ec2::23", "fd00:a9fe:a9fe::1", "fe80::a9fe:a9fe", "fe80::a9fe:a9fe%eth0",
		"::ffff:169.254.169.254", "::ffff:100.100.100.200",
	}
	everything := []string{
		"0.0.0.0/0", "::/0", "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10", "::ffff:0:0/96",
		"169.254.169.254", "fd00:ec2::254",
	}
	dev := []string{"127.0.0.0/8", "::1/128"}

	tests := []struct {
		name  string
		allow []string
		addrs []string
		want  bool
	}{
		{"loopback", nil, []string{"127.0.0.0", "127.0.0.1", "127.255.255.255", "::1"}, false},
		{"unspecified", nil, []string{"0.0.0.0", "0.0.0.1", "0.255.255.255", "::"}, false},
		{"private", nil, []string{
			"10.0.0.0", "10.255.255.255", "172.16.0.0", "172.31.255.255", "192.168.0.0", "192.168.255.255",
			"fc00::", "fd00::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		}, false},
		{"link-local", nil, []string{"169.254.0.0", "169.254.255.255", "fe80::", "fe80::1%eth0", "febf:ffff::1"}, false},
		{"shared address space", nil, []string{"100.64.0.0", "100.127.255.255"}, false},
		{"benchmarking", nil, []string{"198.18.0.0", "198.19.255.255", "2001:2::", "2001:2:0:ffff::1"}, false},
		{"documentation", nil, []string{
			"192.0.2.0", "192.0.2.255", "198.51.100.1", "203.0.113.255",
			"2001:db8::", "2001:db8:ffff::1", "3fff::", "3fff:fff:ffff::1",
		}, false},
		{"IETF protocol assignments", nil, []string{"192.0.0.0", "192.0.0.9", "192.0.0.170", "192.0.0.255", "2001:1::1", "2001:1ff:ffff::1"}, false},
		{"6to4 relay anycast", nil, []string{"192.88.99.1"}, false},
		{"multicast", nil, []string{"224.0.0.0", "224.0.0.1", "239.255.255.255", "ff00::", "ff02::1", "ff0e::1"}, false},
		{"reserved and broadcast", nil, []string{"240.0.0.0", "250.1.2.3", "255.255.255.254", "255.255.255.255"}, false},
		{"discard-only", nil, []string{"100::", "100::ffff:ffff:ffff:ffff"}, false},
		{"site-local", nil, []string{"fec0::1", "feff::1"}, false},
		{"teredo", nil, []string{"2001::", "2001:0:4136:e378:8000:63bf:3fff:fdd2"}, false},
		{"ORCHID", nil, []string{"2001:10::1", "2001:1f::1", "2001:20::1", "2001:2f:ffff::1"}, false},
		{"SRv6 SIDs", nil, []string{"5f00::1"}, false},
		{"unallocated IPv6", nil, []string{"4000::1", "e000::1", "1::1"}, false},
		{"IPv4-mapped", nil, []string{"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:8.8.8.8", "::ffff:0.0.0.0"}, false},
		{"IPv4-compatible", nil, []string{"::127.0.0.1", "::8.8.8.8", "::ffff:ffff"}, false},
		{"NAT64", nil, []string{"64:ff9b::7f00:1", "64:ff9b::8.8.8.8", "64:ff9b:1::1", "64:ff9b:1:ffff::1"}, false},
		{"6to4", nil, []string{"2002::", "2002:7f00:1::1", "2002:ffff:ffff::1"}, false},
		{"metadata", nil, metadata, false},
		{"metadata with everything allowed", everything, metadata, false},

		{"public", nil, []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888"}, true},
		{"just outside blocked ranges", nil, []string{
			"1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255",
			"128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0", "191.255.255.255",
			"192.0.1.0", "192.0.3.0", "192.88.98.255", "192.167.255.255", "192.169.0.0", "198.17.255.255",
			"198.20.0.0", "223.255.255.255",
			"2000::1", "2001:200::1", "2001:db7:ffff::1", "2001:db9::1", "2003::1", "3fff:1000::1", "3fff:ffff::1",
		}, true},
		{"dev allow list", dev, []string{"127.0.0.1", "127.255.255.255", "::1"}, true},
		{"dev allow list is exact", dev, []string{"10.0.0.1", "169.254.169.254", "::2", "::ffff:127.0.0.1", "0.0.0.0"}, false},
		{"dev allow list keeps public", dev, []string{"8.8.8.8", "2606:4700:4700::1111"}, true},
		{"everything allowed", everything, []string{"10.0.0.1", "127.0.0.1", "169.254.1.1", "fd00::1", "::ffff:10.0.0.1"}, true},
		{"zones are ignored", []string{"fe80::/10"}, []string{"fe80::1%eth0", "fe80::1%1"}, true},
		{"mapped needs both forms allowed", []string{"::ffff:0:0/96"}, []string{"::ffff:127.0.0.1"}, false},
	}
	for _, tt := range tests {
		g := newTestGuard(t, tt.allow...)
		for _, s := range tt.addrs {
			t.Run(tt.name+"/"+s, func(t *testing.T) {
				a := netip.MustParseAddr(s)
				require.Equal(t, tt.want, g.allowed(a))

				// control must decide the same for the address as dialled.
				err := g.control("tcp", netip.AddrPortFrom(a, 443).String(), nil)
				if tt.want {
					require.NoError(t, err)
				} else {
					require.Same(t, ErrBlockedDestination, err)
				}
			})
		}
	}
	require.False(t, newTestGuard(t, everything...).allowed(netip.Addr{}))
}

func TestGuardControlMalformed(t *testing.T) {
	g := newTestGuard(t, "0.0.0.0/0", "::/0")
	for _, address := range []string{"", "nonsense", "127.0.0.1", "[::1]", "localhost:80", "999.1.1.1:80", "[::1]:99999"} {
		t.Run(address, func(t *testing.T) {
			require.Same(t, ErrBlockedDestination, g.control("tcp", address, nil))
		})
	}
}

func TestParseInetAton(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.0x0.00.0X1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"1.2.3", "1.2.0.3"},
		{"1.2.65535", "1.2.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"4294967295", "255.255.255.255"},
		{"0", "0.0.0.0"},
		{"00000000000000000000000000001", "0.0.0.1"},
		{"0xa9fea9fe", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"169.254.43518", "169.254.169.254"},

		{"", ""},
		{".", ""},
		{"1.", ""},
		{".1", ""},
		{"1..2", ""},
		{"1.2.3.4.5", ""},
		{"4294967296", ""},
		{"0x100000000", ""},
		{"99999999999999999999999", ""},
		{"1.16777216", ""},
		{"1.2.65536", ""},
		{"1.2.3.256", ""},
		{"256.1", ""},
		{"08.0.0.1", ""},
		{"0x", ""},
		{"0x.1", ""},
		{"0xg", ""},
		{"1e3", ""},
		{"-1", ""},
		{"+1", ""},
		{" 1", ""},
		{"1 ", ""},
		{"١٢٧.0.0.1", ""},
		{"::1", ""},
		{"example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, ok := parseInetAton(tt.in)
			if tt.want == "" {
				require.False(t, ok, "parsed as %s", a)
				return
			}
			require.True(t, ok)
			require.Equal(t, netip.MustParseAddr(tt.want), a)
		})
	}
}

func TestGuardCheckHost(t *testing.T) {
	loopback := []string{
		"127.0.0.1", "127.0.0.1.", "2130706433", "0x7f000001", "0x7f.1", "0x7F.0.0.0x1", "0177.0.0.1",
		"0177.1", "017700000001", "127.1", "127.0.1", "127.0x0.00.1",
		"::1", "[::1]", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::ffff:7f00:1", "0:0:0:0:0:0:0:1",
	}
	localhost := []string{"localhost", "LOCALHOST.", "localhost.", "foo.localhost", "a.b.LocalHost"}
	metadata := []string{
		"169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe",
		"169.254.43518", "0xa9.254.0251.0xfe", "::ffff:169.254.169.254", "[::ffff:a9fe:a9fe]",
		"fd00:ec2::254", "fe80::a9fe:a9fe%eth0", "100.100.100.200", "1684301000",
	}
	other := []string{"10.0.0.1", "012.0.0.1", "0xc0a80001", "fe80::1%eth0", "[fe80::1%25eth0]", "0.0.0.0", "0", "::"}
	names := []string{
		"", "example.com", "hooks.example.org", "localhost.example.com", "notlocalhost", "localhost-1",
		"127.0.0.1.nip.io", "1.2.3.4.5", "256.1.1.1", "0x100000000", "08.0.0.1", "0x", "[", "]", "[]",
	}
	public := []string{"8.8.8.8", "134744072", "0x8.0x8.0x8.0x8", "010.010.010.010", "1.1", "2606:4700:4700::1111", "[2001:4860:4860::8888]"}
	dev := []string{"127.0.0.0/8", "::1/128"}

	tests := []struct {
		name    string
		allow   []string
		hosts   []string
		blocked bool
	}{
		{"loopback", nil, loopback, true},
		{"localhost", nil, localhost, true},
		{"metadata", nil, metadata, true},
		{"metadata with everything allowed", []string{"0.0.0.0/0", "::/0"}, metadata, true},
		{"private and unspecified", nil, other, true},
		{"names", nil, names, false},
		{"public", nil, public, false},
		{"loopback allowed", dev, []string{"127.0.0.1", "2130706433", "0x7f.1", "127.1", "[::1]", "localhost", "foo.localhost"}, false},
		{"localhost with only IPv4 loopback allowed", []string{"127.0.0.1"}, localhost, false},
		{"loopback allowed is exact", dev, []string{"10.0.0.1", "0xa9fea9fe", "[::ffff:127.0.0.1]"}, true},
	}
	for _, tt := range tests {
		g := newTestGuard(t, tt.allow...)
		for _, host := range tt.hosts {
			t.Run(tt.name+"/"+host, func(t *testing.T) {
				err := g.checkHost(host)
				if tt.blocked {
					require.Same(t, ErrBlockedDestination, err)
				} else {
					require.NoError(t, err)
				}
			})
		}
	}
}

// listenRecorder listens on 127.0.0.1 and counts the connections that arrive.
// stop closes the listener and, once its goroutine has exited, returns the
// count; it also runs when the test ends.
func listenRecorder(t *testing.T) (port string, stop func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	stop = func() int64 {
		ln.Close()
		<-done
		return n.Load()
	}
	t.Cleanup(func() { stop() })
	_, port, err = net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	return port, stop
}

// guardGet makes a GET request with a client that connects through dial.
func guardGet(dial func(ctx context.Context, network, address string) (net.Conn, error), rawURL string) (*http.Response, error) {
	tr := &http.Transport{DialContext: dial, Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get(rawURL)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// refuseDNS keeps Go's resolver from sending queries off this machine.
func refuseDNS(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("test: no DNS")
}

// cgoEnabled reports whether this test binary was built with cgo, without
// which GODEBUG=netdns=cgo quietly falls back to Go's own resolver.
func cgoEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	return ok && slices.Contains(bi.Settings, debug.BuildSetting{Key: "CGO_ENABLED", Value: "1"})
}

// cgoResolverActive reports whether names are resolved by the C library, which
// reads inet_aton spellings such as "127.1" as addresses. Go's own resolver
// does not, and fails to look them up instead.
func cgoResolverActive() bool {
	return strings.Contains(os.Getenv("GODEBUG"), "netdns=cgo") && cgoEnabled()
}

// requireNoGoroutineLeak fails t if it ends with more goroutines running than
// it started with, after giving finished ones time to exit.
func requireNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		require.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines left behind")
	})
}

func TestGuardDial(t *testing.T) {
	requireNoGoroutineLeak(t)
	port, stop := listenRecorder(t)
	g := newTestGuard(t)
	raw := g.dialer()
	raw.Resolver = &net.Resolver{Dial: refuseDNS}

	hosts := []struct {
		host    string
		numeric bool // an inet_aton spelling that only the C library resolves
	}{
		{"127.0.0.1", false},
		{"localhost", false},
		{"2130706433", true},
		{"0x7f.1", true},
		{"127.1", true},
		{"[::ffff:127.0.0.1]", false},
	}
	for _, h := range hosts {
		rawURL := "http://" + h.host + ":" + port + "/"
		t.Run(h.host, func(t *testing.T) {
			t.Run("dialContext", func(t *testing.T) {
				_, err := guardGet(g.dialContext, rawURL)
				require.ErrorIs(t, err, ErrBlockedDestination)
				var uerr *url.Error
				require.ErrorAs(t, err, &uerr) // wraps the URL, which is the caller's own
				require.NotContains(t, uerr.Err.Error(), "127.0.0.1")
				require.NotContains(t, uerr.Err.Error(), port)
			})
			t.Run("dialer", func(t *testing.T) {
				_, err := guardGet(raw.DialContext, rawURL)
				if !h.numeric || cgoResolverActive() {
					require.ErrorIs(t, err, ErrBlockedDestination)
					return
				}
				// Go's own resolver takes these for names and finds nothing, so
				// there is no address to dial; with the resolver unknown, allow
				// either outcome.
				var dnsErr *net.DNSError
				require.True(t, errors.Is(err, ErrBlockedDestination) || errors.As(err, &dnsErr), "%v", err)
			})
		})
	}
	require.Zero(t, stop(), "a blocked request reached the listener")
}

func TestGuardResolvers(t *testing.T) {
	if os.Getenv(guardChildEnv) != "" {
		t.Skip("already running under TestGuardResolvers")
	}
	for _, mode := range []string{"go", "cgo"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "cgo" && !cgoEnabled() {
				t.Skip("this test binary cannot use the cgo resolver")
			}
			godebug := strings.TrimPrefix(os.Getenv("GODEBUG")+",netdns="+mode, ",")
			cmd := exec.Command(os.Args[0], "-test.run=^TestGuardDial$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), guardChildEnv+"=1", "GODEBUG="+godebug)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.Contains(t, string(out), "--- PASS: TestGuardDial")
		})
	}
}

func TestGuardDialAllowed(t *testing.T) {
	requireNoGoroutineLeak(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)

	g := newTestGuard(t, "127.0.0.0/8")
	for _, rawURL := range []string{srv.URL, "http://2130706433:" + port, "http://127.1:" + port} {
		t.Run(rawURL, func(t *testing.T) {
			resp, err := guardGet(g.dialContext, rawURL)
			require.NoError(t, err)
			require.Equal(t, http.StatusNoContent, resp.StatusCode)
		})
	}
	resp, err := guardGet(g.dialer().DialContext, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	_, err = guardGet(newTestGuard(t).dialContext, srv.URL)
	require.ErrorIs(t, err, ErrBlockedDestination)
}

func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "127.0.0.1.", "::ffff:127.0.0.1", "[::1]",
		"localhost", "LOCALHOST.", "foo.localhost", "example.com", "0x", "1..2", "4294967295", "4294967296",
		"fe80::1%eth0", "169.254.169.254", "0xa9fea9fe", "8.8.8.8", "[", "",
	} {
		f.Add(s)
	}
	guards := []*netGuard{newTestGuard(f), newTestGuard(f, "127.0.0.0/8", "::1/128")}
	f.Fuzz(func(t *testing.T, host string) {
		for _, g := range guards {
			err := g.checkHost(host)
			if err != nil {
				require.Same(t, ErrBlockedDestination, err)
			}
			if a, ok := parseInetAton(strings.TrimSuffix(host, ".")); ok {
				require.Equal(t, g.allowed(a), err == nil, "%q reads as %s", host, a)
			}
		}
		// The dotted-quad form must read as netip reads it.
		if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
			b, ok := parseInetAton(host)
			require.True(t, ok)
			require.Equal(t, a, b)
		}
	})
}
