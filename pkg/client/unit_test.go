package client

import (
	"errors"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

func runtimeGoroutines() int { return runtime.NumGoroutine() }

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second, Factor: 2, Jitter: 0.25}
	for attempt := 0; attempt < 40; attempt++ {
		d := min(b.Base<<min(attempt, 20), b.Max)
		lo := time.Duration(float64(d) * 0.75)
		hi := min(time.Duration(float64(d)*1.25), b.Max)
		for _, rnd := range []float64{0, 0.1, 0.5, 0.9, 0.999999, 1, -1, 2} {
			got := b.Delay(attempt, rnd)
			if got < lo-1 || got > hi+1 {
				t.Fatalf("attempt %d rnd %v: %v outside [%v, %v]", attempt, rnd, got, lo, hi)
			}
		}
		if lowest := b.Delay(attempt, 0); lowest > lo+1 {
			t.Fatalf("attempt %d: rnd 0 gives %v, want the lower bound %v", attempt, lowest, lo)
		}
	}
	noJitter := Backoff{Base: time.Second, Max: 10 * time.Second, Factor: 3}
	for attempt, want := range []time.Duration{time.Second, 3 * time.Second, 9 * time.Second, 10 * time.Second, 10 * time.Second} {
		if got := noJitter.Delay(attempt, 0.7); got != want {
			t.Fatalf("attempt %d: %v, want %v", attempt, got, want)
		}
	}
	if got := (Backoff{}).Delay(5, 0.5); got != 0 {
		t.Fatalf("zero backoff %v", got)
	}
	huge := Backoff{Base: time.Hour, Max: time.Hour, Factor: 1e300, Jitter: 1}
	if got := huge.Delay(1<<30, 0.99); got > time.Hour || got < 0 {
		t.Fatalf("huge %v", got)
	}
}

func TestAdaptiveInterval(t *testing.T) {
	a := newAdaptiveInterval(60*time.Second, 300*time.Second, 30*time.Second, 3)
	for i := 0; i < 100; i++ {
		a.success()
	}
	if a.get() != 300*time.Second {
		t.Fatalf("grew to %v", a.get())
	}
	a.success()
	a.success()
	a.failure()
	if a.get() != 270*time.Second {
		t.Fatalf("after failure %v", a.get())
	}
	a.success()
	a.success()
	if a.get() != 270*time.Second {
		t.Fatalf("grew before 3 successes in a row: %v", a.get())
	}
	for i := 0; i < 20; i++ {
		a.failure()
	}
	if a.get() != 60*time.Second {
		t.Fatalf("shrank to %v", a.get())
	}
	a.capAt(120 * time.Second)
	for i := 0; i < 100; i++ {
		a.success()
	}
	if a.get() != 120*time.Second {
		t.Fatalf("capped at 120s, grew to %v", a.get())
	}
	a.capAt(time.Second) // the server's interval wins over HeartbeatMin
	if a.get() != time.Second {
		t.Fatalf("cap below min: %v", a.get())
	}
	a.failure()
	if a.get() != time.Second {
		t.Fatalf("shrank below the cap: %v", a.get())
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestIDGenOrderedAndUnique(t *testing.T) {
	var g IDGen
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 20000; i++ {
		id := g.New()
		if !uuidRE.MatchString(id) {
			t.Fatalf("%q is not a UUIDv7", id)
		}
		if id <= prev || seen[id] {
			t.Fatalf("id %q not increasing after %q", id, prev)
		}
		seen[id] = true
		prev = id
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		field string
		cfg   Config
	}{
		{"Addrs", Config{}},
		{"Transport", Config{Addrs: []string{"h:1"}, Transport: "udp"}},
		{"Addrs[0]", Config{Addrs: []string{"nohost"}}},
		{"Addrs[0]", Config{Addrs: []string{"quic://h:1"}}},
		{"HeartbeatMax", Config{Addrs: []string{"h:1"}, HeartbeatMin: time.Hour}},
		{"BackoffMax", Config{Addrs: []string{"h:1"}, BackoffBase: time.Hour}},
		{"BackoffFactor", Config{Addrs: []string{"h:1"}, BackoffFactor: 0.5}},
		{"BackoffJitter", Config{Addrs: []string{"h:1"}, BackoffJitter: 2}},
		{"SendTimeout", Config{Addrs: []string{"h:1"}, SendTimeout: -1}},
		{"Cursors", Config{Addrs: []string{"h:1"}, Cursors: map[string]int64{"c": -1}}},
		{"MaxInboundBody", Config{Addrs: []string{"h:1"}, MaxInboundBody: -1}},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("New(%+v) = %v, want a ConfigError on %s", tt.cfg, err, tt.field)
		}
	}
	c, err := New(Config{Addrs: []string{"h:1", "wss://h:2/x"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.HeartbeatMin != DefaultHeartbeatMin || c.cfg.HeartbeatMax != DefaultHeartbeatMax ||
		c.cfg.HeartbeatStep != DefaultHeartbeatStep || c.cfg.Transport != TransportTCP {
		t.Fatalf("defaults not applied: %+v", c.cfg)
	}
	c.Close()
}

// The gap grace follows the push lag measured on gaps the device's own
// ACK opened, within [GapGrace, maxGraceFactor*GapGrace].
func TestGapGraceFollowsPushLag(t *testing.T) {
	const grace = 10 * time.Millisecond
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}, GapGrace: grace, EventBuffer: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newSession(&tcpConn{c: discardConn{}, lim: limits{writeTimeout: time.Second}}, "unit")
	graceNow := func() time.Duration {
		c.convMu.Lock()
		defer c.convMu.Unlock()
		return c.gapGraceLocked()
	}
	if g := graceNow(); g != grace {
		t.Fatalf("grace %v before any sample, want GapGrace %v", g, grace)
	}
	const lag = 30 * time.Millisecond
	for i := int64(1); i <= 20; i++ {
		// The own message (seq 2i) is ACKed before the peer's (2i-1) is pushed.
		c.handlePush(s, &protocol.Msg{ConvId: "s:1:2", Seq: 2 * i, Sender: 1}, true)
		time.Sleep(lag)
		c.handlePush(s, &protocol.Msg{ConvId: "s:1:2", Seq: 2*i - 1, Sender: 2}, false)
	}
	if got := c.Cursors()["s:1:2"]; got != 40 {
		t.Fatalf("cursor %d, want 40", got)
	}
	if g := graceNow(); g < lag || g > maxGraceFactor*grace {
		t.Fatalf("grace %v after pushes %v late, want within [%v, %v]", g, lag, lag, maxGraceFactor*grace)
	}
	c.convMu.Lock()
	for range 100 {
		c.noteLagLocked(time.Hour)
	}
	c.convMu.Unlock()
	if g := graceNow(); g != maxGraceFactor*grace {
		t.Fatalf("grace %v after huge lags, want the cap %v", g, maxGraceFactor*grace)
	}
}

// A client that stops while messages it already counted in its cursors
// are still being emitted moves the cursors back below the first message
// the app did not get, and emits nothing after a dropped message.
func TestDeliverAfterStopKeepsCursorsHonest(t *testing.T) {
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}, Mid: 1, EventBuffer: 2,
		Cursors: map[string]int64{"s:1:2": 10, "g:7": 5}})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(conv string, seq int64) *protocol.Msg { return &protocol.Msg{ConvId: conv, Seq: seq} }
	// As a sync reply does: the cursors move, then the messages are emitted.
	c.convMu.Lock()
	c.convs["s:1:2"].contig, c.convs["g:7"].contig = 13, 7
	c.convMu.Unlock()
	c.cancel()
	c.deliver([]*protocol.Msg{msg("s:1:2", 11), msg("g:7", 6), msg("s:1:2", 12), msg("g:7", 7), msg("s:1:2", 13)})
	// The buffer had room for two: those are emitted although the client
	// stopped; the rest is not, and the cursors say so.
	if got := c.Cursors(); got["s:1:2"] != 11 || got["g:7"] != 6 {
		t.Fatalf("cursors %v, want s:1:2 at 11 and g:7 at 6", got)
	}
	c.deliver([]*protocol.Msg{msg("g:9", 1)})
	if n := len(c.events); n != 2 {
		t.Fatalf("%d events emitted, want 2", n)
	}
	for _, want := range []int64{11, 6} {
		if ev := (<-c.events).(Message); ev.Seq != want {
			t.Fatalf("emitted seq %d, want %d", ev.Seq, want)
		}
	}
	// Once one was dropped, nothing more goes out, even with room again.
	c.deliver([]*protocol.Msg{msg("g:9", 1)})
	if n := len(c.events); n != 0 {
		t.Fatalf("%d events emitted after a dropped one", n)
	}
}
