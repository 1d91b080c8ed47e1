package comet

import (
	"crypto/tls"
	"net"
	"net/netip"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hubuim/hubuim/api/protocol"
)

// dialerFrom dials from the local address ip (any port).
func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// tcpClientFrom connects a TCP client from ip and authenticates key.
func (e *env) tcpClientFrom(tb testing.TB, ip, key string) *client {
	tb.Helper()
	nc, err := dialerFrom(ip).Dial("tcp", e.s.Addrs().TCP)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	c := &client{tb: tb, nc: nc}
	e.auth(tb, c, authBody{Mid: 1, Key: key})
	return c
}

// wsClientFrom connects a WebSocket client from ip and authenticates key.
func (e *env) wsClientFrom(tb testing.TB, ip, key string) *client {
	tb.Helper()
	d := websocket.Dialer{NetDial: dialerFrom(ip).Dial}
	ws, _, err := d.Dial("ws://"+e.s.Addrs().WS+"/sub", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ws.Close() })
	c := &client{tb: tb, ws: ws, nc: ws.UnderlyingConn()}
	e.auth(tb, c, authBody{Mid: 1, Key: key})
	return c
}

func gaugeValue(tb testing.TB, g prometheus.Gauge) float64 {
	tb.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func (e *env) wantIPs(tb testing.TB, want int64) {
	tb.Helper()
	eventually(tb, "ip count", func() bool { return e.s.IPCount() == want })
	if g := gaugeValue(tb, e.s.m.clientIPs); g != float64(want) {
		tb.Fatalf("hubuim_comet_client_ips = %v, want %d", g, want)
	}
}

func TestIPCount(t *testing.T) {
	for _, poller := range []bool{true, false} {
		name := "poller"
		if !poller {
			name = "nopoller"
		}
		t.Run(name, func(t *testing.T) {
			e := startServer(t, func(c *Config) { c.DisableTCPPoller = !poller })
			e.wantIPs(t, 0)
			a := e.tcpClientFrom(t, "127.0.0.1", "a")
			e.wsClientFrom(t, "127.0.0.1", "b")
			e.wantIPs(t, 1)
			c := e.tcpClientFrom(t, "127.0.0.2", "c")
			e.wantIPs(t, 2)
			d := e.wsClientFrom(t, "127.0.0.2", "d")
			e.wantIPs(t, 2)

			// Closing one of two connections from an address keeps it.
			_ = c.nc.Close()
			eventually(t, "3 conns", func() bool { return e.s.Conns() == 3 })
			e.wantIPs(t, 2)
			_ = d.ws.Close()
			eventually(t, "2 conns", func() bool { return e.s.Conns() == 2 })
			e.wantIPs(t, 1)

			// A duplicate login from another address replaces the old
			// connection: its address goes, the new one comes.
			nu := e.tcpClientFrom(t, "127.0.0.3", "a")
			a.expect(protocol.OpKick)
			a.expectClosed()
			eventually(t, "2 conns after replace", func() bool { return e.s.Conns() == 2 })
			e.wantIPs(t, 2) // 127.0.0.1 (b) and 127.0.0.3
			// A duplicate login from the same address keeps the count.
			e.tcpClientFrom(t, "127.0.0.3", "a")
			nu.expect(protocol.OpKick)
			nu.expectClosed()
			eventually(t, "2 conns after second replace", func() bool { return e.s.Conns() == 2 })
			e.wantIPs(t, 2)
		})
	}
}

func TestIPCountTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	e := startServer(t, func(c *Config) {
		c.TCPTLSAddr = "127.0.0.1:0"
		c.WSSAddr = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	tcfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	td := tls.Dialer{NetDialer: dialerFrom("127.0.0.4"), Config: tcfg}
	nc, err := td.Dial("tcp", e.s.Addrs().TCPTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	e.auth(t, &client{tb: t, nc: nc}, authBody{Mid: 1, Key: "tls"})
	e.wantIPs(t, 1)

	wd := websocket.Dialer{TLSClientConfig: tcfg, NetDial: dialerFrom("127.0.0.5").Dial}
	ws, _, err := wd.Dial("wss://"+e.s.Addrs().WSS+"/sub", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	e.auth(t, &client{tb: t, ws: ws, nc: ws.UnderlyingConn()}, authBody{Mid: 1, Key: "wss"})
	e.wantIPs(t, 2)

	_ = nc.Close()
	_ = ws.Close()
	eventually(t, "no conns", func() bool { return e.s.Conns() == 0 })
	e.wantIPs(t, 0)
}

func TestIPCounterUnit(t *testing.T) {
	var ic ipCounter
	v4 := netip.MustParseAddr("10.0.0.1")
	mapped := netip.MustParseAddr("::ffff:10.0.0.1").Unmap()
	v6 := netip.MustParseAddr("2001:db8::1")
	ic.add(v4)
	ic.add(mapped)
	ic.add(v6)
	ic.add(netip.Addr{}) // not counted
	if got := ic.count(); got != 2 {
		t.Fatalf("count = %d, want 2", got)
	}
	ic.remove(netip.Addr{})
	ic.remove(netip.MustParseAddr("10.9.9.9")) // never added: ignored
	ic.remove(v4)
	if got := ic.count(); got != 2 {
		t.Fatalf("count after one of two = %d, want 2", got)
	}
	ic.remove(v4)
	ic.remove(v6)
	if got := ic.count(); got != 0 {
		t.Fatalf("count after all = %d, want 0", got)
	}
	for i := range ic.shards {
		if ic.shards[i].m != nil {
			t.Fatalf("shard %d keeps an empty map", i)
		}
	}
}

func TestRemoteIP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, err := dialerFrom("127.0.0.6").Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = sc.Close() // the address is still readable after Close (finish)
	if got := remoteIP(sc); got != netip.MustParseAddr("127.0.0.6") {
		t.Fatalf("remoteIP = %v", got)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := remoteIP(a); got.IsValid() {
		t.Fatalf("remoteIP(pipe) = %v, want invalid", got)
	}
}

// BenchmarkIPCountAddRemove is the per-connection cost of the IP count
// (once at authentication, once at close).
func BenchmarkIPCountAddRemove(b *testing.B) {
	var ic ipCounter
	ic.add(netip.MustParseAddr("192.0.2.1")) // the shard's map exists
	a := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		ic.add(a)
		ic.remove(a)
	}
}
