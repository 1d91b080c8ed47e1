package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

var allTransports = []string{TransportTCP, TransportTLS, TransportWS, TransportWSS}

func TestConnectAuthAndSend(t *testing.T) {
	for _, tr := range allTransports {
		t.Run(tr, func(t *testing.T) {
			srv := newFakeServer(t, tr)
			cfg := testConfig(srv)
			cfg.RoomID = "live://1"
			cfg.Accepts = []int32{1001}
			c, r := startClient(t, cfg)

			waitFor(t, "Connected event", func() bool { return len(eventsOf[Connected](r)) == 1 })
			conn := eventsOf[Connected](r)[0]
			if conn.Key != "dev-1" || conn.Mid != 42 || c.Key() != "dev-1" {
				t.Fatalf("Connected = %+v, Key() = %q; want server-assigned key dev-1, mid 42", conn, c.Key())
			}
			var auth authBody
			srv.get(func(s *fakeServer) { auth = s.auths[0] })
			if auth.Mid != 42 || auth.Token != "tok" || auth.Platform != "test" || auth.RoomID != "live://1" ||
				!slices.Equal(auth.Accepts, []int32{1001}) || auth.Key != "" {
				t.Fatalf("auth body = %+v", auth)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ack, err := c.Send(ctx, User(7), 1, []byte("hi"))
			if err != nil {
				t.Fatal(err)
			}
			if ack.ConvId != "s:7:42" || ack.Seq != 1 {
				t.Fatalf("ack = %v", ack)
			}
			// The sent message comes back as a Message in order, once.
			waitFor(t, "own message", func() bool { return len(msgSeqs(r, "s:7:42")) == 1 })
			m := eventsOf[Message](r)[0]
			if string(m.Payload) != "hi" || m.Sender != 42 || m.ClientMsgId != ack.ClientMsgId {
				t.Fatalf("message = %v", m.Msg)
			}

			// Reconnect reuses the server-assigned key.
			srv.kill()
			waitFor(t, "second auth", func() bool {
				n := 0
				srv.get(func(s *fakeServer) { n = len(s.auths) })
				return n == 2
			})
			srv.get(func(s *fakeServer) { auth = s.auths[1] })
			if auth.Key != "dev-1" {
				t.Fatalf("reconnect auth key = %q, want dev-1", auth.Key)
			}
			waitFor(t, "Disconnected then Connected", func() bool {
				return len(eventsOf[Disconnected](r)) == 1 && len(eventsOf[Connected](r)) == 2
			})
		})
	}
}

func TestNodeListFallback(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	good := srv.addr[len("tcp://"):]

	var gotPlatform string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPlatform = r.URL.Query().Get("platform")
		_, _ = w.Write([]byte(`{"code":0,"message":"","data":{"domain":"x","nodes":[` +
			`{"id":"a","tcp_addr":"` + deadAddr + `"},{"id":"b","tcpAddr":"` + good + `"}],"heartbeat_ms":"60000"}}`))
	}))
	defer hs.Close()

	cfg := testConfig(srv)
	cfg.Addrs = nil
	cfg.NodeListURL = hs.URL + "/goim/nodes/weighted"
	_, r := startClient(t, cfg)
	waitFor(t, "Connected", func() bool { return len(eventsOf[Connected](r)) == 1 })
	if got := eventsOf[Connected](r)[0].Addr; got != "tcp://"+good {
		t.Fatalf("connected to %s, want %s", got, good)
	}
	if gotPlatform != "test" {
		t.Fatalf("node list platform = %q", gotPlatform)
	}
}

func TestNodeListDownFallsBackToAddrs(t *testing.T) {
	srv := newFakeServer(t, TransportWS)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer hs.Close()
	cfg := testConfig(srv)
	cfg.NodeListURL = hs.URL
	_, r := startClient(t, cfg)
	waitFor(t, "Connected", func() bool { return len(eventsOf[Connected](r)) == 1 })
	if got := eventsOf[Connected](r)[0].Addr; got != srv.addr+DefaultWSPath {
		t.Fatalf("connected to %s, want %s", got, srv.addr)
	}
	if e := eventsOf[Error](r); len(e) != 1 || !errors.Is(e[0].Err, ErrNodeList) {
		t.Fatalf("errors %v, want one ErrNodeList", e)
	}
}

func TestParseNodeList(t *testing.T) {
	tests := []struct {
		name, body, transport string
		want                  []string
		wantErr               bool
	}{
		{"hubuim ws", `{"code":0,"data":{"nodes":[{"ws_addr":"h1:3102"},{"wsAddr":"ws://h2:3102/sub"}]}}`, TransportWS,
			[]string{"ws://h1:3102", "ws://h2:3102/sub"}, false},
		{"goim hosts tcp", `{"code":0,"data":{"tcp_port":3101,"ws_port":3102,"nodes":["10.0.0.1","10.0.0.2"]}}`, TransportTCP,
			[]string{"tcp://10.0.0.1:3101", "tcp://10.0.0.2:3101"}, false},
		{"goim wss uses domain", `{"code":0,"data":{"domain":"im.example","wss_port":3103,"nodes":["10.0.0.1"]}}`, TransportWSS,
			[]string{"wss://im.example:3103"}, false},
		{"error code", `{"code":-500,"message":"boom","data":null}`, TransportTCP, nil, true},
		{"no node for transport", `{"code":0,"data":{"nodes":[{"ws_addr":"h:1"}]}}`, TransportTLS, nil, true},
		{"not json", `<html>`, TransportTCP, nil, true},
		{"bad node", `{"code":0,"data":{"nodes":[42]}}`, TransportTCP, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseNodeList([]byte(tt.body), tt.transport)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrNodeList) {
				t.Fatalf("err %v is not ErrNodeList", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseNodeListHints(t *testing.T) {
	const node = `"nodes":[{"tcp_addr":"h:1"}]`
	want := nodeHints{heartbeat: 4 * time.Minute, backoff: Backoff{Base: time.Second, Max: time.Minute, Factor: 1.6, Jitter: 0.3}}
	tests := []struct {
		name, data string
		want       nodeHints
	}{
		{"hubuim", `"heartbeat_ms":240000,"backoff":{"base_delay_ms":1000,"max_delay_ms":60000,"factor":1.6,"jitter":0.3}`, want},
		{"protojson", `"heartbeatMs":"240000","backoff":{"baseDelayMs":"1000","maxDelayMs":"60000","factor":1.6,"jitter":0.3}`, want},
		{"goim seconds", `"heartbeat":240,"backoff":{"base_delay":1,"max_delay":60,"factor":1.6,"jitter":0.3}`, want},
		{"none", `"domain":"x"`, nodeHints{}},
		{"zero and negative suggest nothing", `"heartbeat_ms":0,"heartbeat":-5,"backoff":{"base_delay_ms":-1}`, nodeHints{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := parseNodeList([]byte(`{"code":0,"data":{`+node+`,`+tt.data+`}}`), TransportTCP)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("hints %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A node list may stretch the reconnect backoff but never shorten it.
func TestBackoffWithHints(t *testing.T) {
	cfg := Backoff{Base: 5 * time.Millisecond, Max: 50 * time.Millisecond, Factor: 2, Jitter: 0.2}
	tests := []struct {
		name      string
		hint, got Backoff
	}{
		{"stretch", Backoff{Base: time.Second, Max: 30 * time.Second, Factor: 3, Jitter: 0.5},
			Backoff{Base: time.Second, Max: 30 * time.Second, Factor: 3, Jitter: 0.2}},
		{"never shorter; smaller factor and any jitter ignored", Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond, Factor: 1, Jitter: 1}, cfg},
		{"base above max lifts max", Backoff{Base: 100 * time.Millisecond},
			Backoff{Base: 100 * time.Millisecond, Max: 100 * time.Millisecond, Factor: 2, Jitter: 0.2}},
		{"none", Backoff{}, cfg},
	}
	for _, tt := range tests {
		got := cfg.withHints(tt.hint)
		if got != tt.got {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.got)
		}
		for attempt := range 8 {
			for _, r := range []float64{0, 0.5, 0.999} {
				if got.Delay(attempt, r) < cfg.Delay(attempt, r) {
					t.Errorf("%s: attempt %d r %v: delay %v below the configured %v", tt.name, attempt, r, got.Delay(attempt, r), cfg.Delay(attempt, r))
				}
			}
		}
	}
}

// The node list's heartbeat and backoff are followed: a goim-style server
// (empty AuthReply) gets heartbeats as often as its list asks.
func TestNodeListHintsApplied(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"code":0,"data":{"nodes":[{"tcp_addr":"` + srv.addr[len("tcp://"):] + `"}],` +
			`"heartbeat_ms":1500,"backoff":{"base_delay_ms":200,"max_delay_ms":3000,"factor":1.5,"jitter":0.1}}}`))
	}))
	defer hs.Close()
	cfg := testConfig(srv)
	cfg.Addrs = nil
	cfg.NodeListURL = hs.URL
	cfg.HeartbeatMin = 2 * time.Second
	cfg.HeartbeatMax = 4 * time.Second
	c, r := startClient(t, cfg)
	waitFor(t, "Connected", func() bool { return len(eventsOf[Connected](r)) == 1 })
	if got := c.HeartbeatInterval(); got != 1500*time.Millisecond {
		t.Fatalf("heartbeat interval %v, want the node list's 1.5s", got)
	}
	// runLoop set backoff before the Connected event was emitted.
	if want := (Backoff{Base: 200 * time.Millisecond, Max: 3 * time.Second, Factor: 2, Jitter: 0.2}); c.backoff != want {
		t.Fatalf("backoff %+v, want %+v", c.backoff, want)
	}
}

func TestHeartbeatAdaptiveAndDeadConnection(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.HeartbeatMin = 10 * time.Millisecond
	cfg.HeartbeatMax = 40 * time.Millisecond
	cfg.HeartbeatStep = 10 * time.Millisecond
	cfg.HeartbeatGrowAfter = 2
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.AckInterval = time.Hour // no other traffic
	c, r := startClient(t, cfg)

	if got := c.HeartbeatInterval(); got != 10*time.Millisecond {
		t.Fatalf("initial interval %v", got)
	}
	waitFor(t, "interval grows to max", func() bool { return c.HeartbeatInterval() == 40*time.Millisecond })
	waitFor(t, "room online from reply", func() bool { return c.RoomOnline() == 7 })

	srv.set(func(s *fakeServer) { s.hbAnswer = false })
	waitFor(t, "dead connection detected", func() bool {
		for _, d := range eventsOf[Disconnected](r) {
			if errors.Is(d.Err, ErrDeadConnection) {
				return true
			}
		}
		return false
	})
	// One failure takes a step off; more may follow before the check.
	if got := c.HeartbeatInterval(); got > 30*time.Millisecond {
		t.Fatalf("interval after a failure = %v, want at most 30ms", got)
	}
	srv.set(func(s *fakeServer) { s.hbAnswer = true })
	waitFor(t, "reconnected", func() bool { return len(eventsOf[Connected](r)) >= 2 })
}

func TestHeartbeatCappedByServer(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.authHB = 20 })
	cfg := testConfig(srv)
	cfg.HeartbeatMin = 10 * time.Millisecond
	cfg.HeartbeatMax = time.Second
	cfg.HeartbeatStep = 10 * time.Millisecond
	cfg.HeartbeatGrowAfter = 1
	c, _ := startClient(t, cfg)
	waitFor(t, "some heartbeats", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = s.hbCount })
		return n >= 5
	})
	if got := c.HeartbeatInterval(); got != 20*time.Millisecond {
		t.Fatalf("interval = %v, want the server's 20ms", got)
	}
}

// A server's heartbeat cap cannot go below a second (unless HeartbeatMin
// does), and it lasts only for that server's connection (found by review:
// a hint of 1 ms made the client send 857 heartbeats a second, on every
// later server too).
func TestHeartbeatServerCapBoundedAndPerConnection(t *testing.T) {
	a := newAdaptiveInterval(2*time.Second, 4*time.Second, time.Second, 1)
	a.capAt(time.Millisecond)
	if got := a.get(); got != time.Second {
		t.Fatalf("interval after a 1ms cap = %v, want the 1s floor", got)
	}
	a.reset() // the next server asks for nothing
	if got := a.get(); got != 2*time.Second {
		t.Fatalf("interval after reset = %v, want the configured 2s", got)
	}
	fast := newAdaptiveInterval(10*time.Millisecond, time.Second, 10*time.Millisecond, 1)
	fast.capAt(20 * time.Millisecond) // an app configured below the floor keeps its own
	fast.capAt(time.Millisecond)
	if got := fast.get(); got != 10*time.Millisecond {
		t.Fatalf("interval = %v, want HeartbeatMin 10ms as the floor", got)
	}
}

func TestSendRetriedUntilAck(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.dropAcks = 2 })
	c, r := startClient(t, testConfig(srv))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, Group(5), 1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	var sends []*protocol.MsgSend
	srv.get(func(s *fakeServer) { sends = slices.Clone(s.sends) })
	if len(sends) != 3 {
		t.Fatalf("server saw %d MsgSend, want 3", len(sends))
	}
	for _, m := range sends {
		if m.ClientMsgId != ack.ClientMsgId {
			t.Fatalf("resend with another client id %q != %q", m.ClientMsgId, ack.ClientMsgId)
		}
	}
	waitFor(t, "own message", func() bool { return len(msgSeqs(r, "g:5")) == 1 })
}

func TestSendGivesUp(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.dropAcks = 1000 })
	cfg := testConfig(srv)
	cfg.SendTimeout = 20 * time.Millisecond
	cfg.MaxResends = 2
	c, _ := startClient(t, cfg)
	_, err := c.Send(context.Background(), Group(5), 1, []byte("x"))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	waitFor(t, "1 + 2 resends at the server", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.sends) })
		return n == 3
	})
}

func TestSendStatusError(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) {
		s.onMsgSend = func(fc *fakeConn, m *protocol.MsgSend) bool {
			_ = fc.writeProto(protocol.OpMsgSendAck, 0, &protocol.MsgSendAck{
				ClientMsgId: m.ClientMsgId, Status: protocol.Status_STATUS_FORBIDDEN, Reason: "not a member"})
			return false
		}
	})
	c, _ := startClient(t, testConfig(srv))
	ack, err := c.Send(context.Background(), Group(5), 1, []byte("x"))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != protocol.Status_STATUS_FORBIDDEN || ack == nil {
		t.Fatalf("ack %v err %v, want StatusError FORBIDDEN", ack, err)
	}
}

// A retryable refusal (a dependency of the server failed, nothing was
// stored) keeps the message in flight: the same client message id is sent
// again until it is taken.
func TestSendRetriesRetryableStatus(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	refusals := 2
	srv.set(func(s *fakeServer) {
		s.onMsgSend = func(fc *fakeConn, m *protocol.MsgSend) bool {
			if refusals == 0 {
				return true
			}
			refusals--
			_ = fc.writeProto(protocol.OpMsgSendAck, 0, &protocol.MsgSendAck{
				ClientMsgId: m.ClientMsgId, Status: protocol.Status_STATUS_INTERNAL, Reason: "internal error, retry"})
			return false
		}
	})
	cfg := testConfig(srv)
	cfg.SendTimeout = 50 * time.Millisecond
	c, _ := startClient(t, cfg)
	ack, err := c.Send(context.Background(), Group(5), 1, []byte("x"))
	if err != nil || ack.Status != protocol.Status_STATUS_OK || ack.Seq == 0 {
		t.Fatalf("ack %v err %v, want the message taken after two refusals", ack, err)
	}
	var sends []*protocol.MsgSend
	srv.get(func(s *fakeServer) { sends = slices.Clone(s.sends) })
	if len(sends) != 3 {
		t.Fatalf("server saw %d MsgSend, want 3", len(sends))
	}
	for _, m := range sends {
		if m.ClientMsgId != ack.ClientMsgId {
			t.Fatalf("retry with another client id %q != %q", m.ClientMsgId, ack.ClientMsgId)
		}
	}
}

// Two refusals then the final ACK for one client message id, all answers
// to the first attempt: a Send waiting out a refusal takes the final ACK
// at once (it used to wait for its ctx, with the reader blocked on the
// full one-slot channel meanwhile: found by review); a Send that gave up
// leaves the connection working and Close returns.
func TestSendFinalAckAfterRefusals(t *testing.T) {
	for _, gaveUp := range []bool{false, true} {
		t.Run(fmt.Sprint("gave_up=", gaveUp), func(t *testing.T) {
			srv := newFakeServer(t, TransportTCP)
			srv.set(func(s *fakeServer) {
				s.onMsgSend = func(fc *fakeConn, m *protocol.MsgSend) bool {
					ack := s.store1(fc.mid, m)
					refuse := &protocol.MsgSendAck{ClientMsgId: m.ClientMsgId, Status: protocol.Status_STATUS_UNAVAILABLE}
					_ = fc.writeProto(protocol.OpMsgSendAck, 0, refuse)
					_ = fc.writeProto(protocol.OpMsgSendAck, 0, refuse)
					go func() {
						time.Sleep(30 * time.Millisecond)
						_ = fc.writeProto(protocol.OpMsgSendAck, 0, ack)
					}()
					return false
				}
			})
			cfg := testConfig(srv)
			cfg.SendTimeout = time.Hour // no resend: every answer is to the first attempt
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := record(c)
			if err := c.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			wait := 10 * time.Second
			if gaveUp {
				wait = 10 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			ack, err := c.Send(ctx, User(7), 1, []byte("hi"))
			cancel()
			switch {
			case gaveUp && !errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("Send: ack %v err %v, want it to give up", ack, err)
			case !gaveUp && (err != nil || ack.Seq == 0):
				t.Fatalf("Send: ack %v err %v, want the final ACK", ack, err)
			}
			if gaveUp { // the reader still reads: a later message goes through
				srv.set(func(s *fakeServer) { s.onMsgSend = nil })
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := c.Send(ctx, User(7), 1, []byte("again")); err != nil {
					t.Fatalf("second Send: %v", err)
				}
			}
			done := make(chan struct{})
			go func() { c.Close(); close(done) }()
			select {
			case <-done:
				<-r.done
			case <-time.After(5 * time.Second):
				t.Fatal("Close hangs: the reader is blocked")
			}
		})
	}
}

// The final ACK never blocks the reader, even when a refusal is still in
// the pending send's one-slot channel and Send will not read again (it
// gave up at that moment): the refusal is dropped. (The reader used to
// block for good, and Close with it.)
func TestHandleAckDropsUnreadRefusal(t *testing.T) {
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ps := &pendingSend{msg: &protocol.MsgSend{ClientMsgId: "m1"}, ch: make(chan *protocol.MsgSendAck, 1)}
	c.sends["m1"] = ps
	ps.ch <- &protocol.MsgSendAck{ClientMsgId: "m1", Status: protocol.Status_STATUS_UNAVAILABLE}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.handleAck(nil, &protocol.MsgSendAck{ClientMsgId: "m1"}) // OK, no conversation: nothing to deliver
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handleAck blocked on a refusal nobody reads")
	}
	if got := <-ps.ch; got.Status != protocol.Status_STATUS_OK {
		t.Fatalf("pending send holds %v, want the final ACK", got)
	}
}

// An ACK that comes after Send gave up still brings the device its own
// message (the fan-out skips the sending device): it is pulled.
func TestLateAckPullsOwnMessage(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) {
		s.onMsgSend = func(fc *fakeConn, m *protocol.MsgSend) bool {
			ack := s.store1(fc.mid, m)
			go func() {
				time.Sleep(50 * time.Millisecond) // after Send gave up
				_ = fc.writeProto(protocol.OpMsgSendAck, 0, ack)
			}()
			return false
		}
	})
	cfg := testConfig(srv)
	cfg.SendTimeout = time.Hour
	c, r := startClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Send(ctx, User(7), 1, []byte("late")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send: %v, want it to give up", err)
	}
	waitFor(t, "own message pulled", func() bool {
		for _, m := range eventsOf[Message](r) {
			if string(m.Msg.Payload) == "late" {
				return true
			}
		}
		return false
	})
}

func TestSendResentAfterReconnect(t *testing.T) {
	srv := newFakeServer(t, TransportWS)
	first := true
	srv.set(func(s *fakeServer) {
		s.onMsgSend = func(fc *fakeConn, m *protocol.MsgSend) bool {
			s.mu.Lock()
			drop := first
			first = false
			s.mu.Unlock()
			if drop { // store it, but the connection dies before the ACK
				s.store1(fc.mid, m)
				fc.close()
				return false
			}
			// Answer twice: the SDK must hand the ACK back once.
			_ = fc.writeProto(protocol.OpMsgSendAck, 0, s.store1(fc.mid, m))
			return true
		}
	})
	cfg := testConfig(srv)
	cfg.SendTimeout = 5 * time.Second // the resend must come from the reconnect
	c, r := startClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, User(8), 3, []byte("again"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 1 {
		t.Fatalf("ack seq %d, want the original 1", ack.Seq)
	}
	var sends []*protocol.MsgSend
	var stored int
	srv.get(func(s *fakeServer) { sends = slices.Clone(s.sends); stored = len(s.store["s:8:42"]) })
	if len(sends) != 2 || sends[0].ClientMsgId != sends[1].ClientMsgId || stored != 1 {
		t.Fatalf("sends %v stored %d", sends, stored)
	}
	waitFor(t, "reconnect event", func() bool { return len(eventsOf[Connected](r)) == 2 })
	waitFor(t, "message once", func() bool { return slices.Equal(msgSeqs(r, "s:8:42"), []int64{1}) })
}

func TestGapPullInOrderExactlyOnce(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1, 2)
	cfg := testConfig(srv)
	cfg.Cursors = map[string]int64{"g:1": 2}
	c, r := startClient(t, cfg)
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})

	msgs := srv.addMsgs("g:1", 3, 4, 5)
	srv.pushProto(protocol.OpMsgPush, msgs[2]) // 5 arrives first: gap 3..4
	waitFor(t, "3,4,5", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{3, 4, 5}) })
	var syncs []*protocol.Sync
	srv.get(func(s *fakeServer) { syncs = slices.Clone(s.syncs) })
	if len(syncs) != 2 || syncs[1].ConvId != "g:1" || syncs[1].FromSeq != 2 || syncs[1].Limit != DefaultSyncLimit {
		t.Fatalf("syncs = %v, want a pull of g:1 from 2", syncs)
	}
	// Duplicates are dropped.
	srv.pushProto(protocol.OpMsgPush, msgs[0])
	srv.pushProto(protocol.OpMsgPush, msgs[2])
	next := srv.addMsgs("g:1", 6)
	srv.pushProto(protocol.OpMsgPush, next[0])
	waitFor(t, "6", func() bool { return len(msgSeqs(r, "g:1")) >= 4 })
	if got := msgSeqs(r, "g:1"); !slices.Equal(got, []int64{3, 4, 5, 6}) {
		t.Fatalf("delivered %v", got)
	}
	if got := c.Cursors()["g:1"]; got != 6 {
		t.Fatalf("cursor %d", got)
	}
	waitFor(t, "delivered ack 6", func() bool {
		var last int64
		srv.get(func(s *fakeServer) {
			for _, a := range s.delivered {
				if a.ConvId == "g:1" {
					last = a.Seq
				}
			}
		})
		return last == 6
	})
	var acks int
	srv.get(func(s *fakeServer) { acks = len(s.delivered) })
	if acks > 3 {
		t.Fatalf("%d delivered acks for 4 messages: not coalesced", acks)
	}
}

func TestNotifyPullsAllPages(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	_, r := startClient(t, testConfig(srv))
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})
	srv.addMsgs("g:big", seqRange(1, 250)...)
	srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:big", MaxSeq: 250})
	waitFor(t, "250 messages", func() bool { return len(msgSeqs(r, "g:big")) == 250 })
	if got := msgSeqs(r, "g:big"); !slices.Equal(got, seqRange(1, 250)) {
		t.Fatalf("out of order: %v", got)
	}
	if n := eventsOf[Notify](r); len(n) != 1 || n[0].MaxSeq != 250 {
		t.Fatalf("notify events %v", n)
	}
	var pulls int
	srv.get(func(s *fakeServer) { pulls = len(s.syncs) - 1 })
	if pulls != 3 {
		t.Fatalf("%d pulls for 250 messages at limit 100, want 3", pulls)
	}
}

func TestUnfillableGapMovesOn(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1, 2)
	cfg := testConfig(srv)
	cfg.Cursors = map[string]int64{"g:1": 2}
	c, r := startClient(t, cfg)

	// 3 and 4 were skipped by a counter jump: the pull returns only 5.
	m5 := srv.addMsgs("g:1", 5)
	srv.pushProto(protocol.OpMsgPush, m5[0])
	waitFor(t, "5", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{5}) })

	// A notice up to 8 where 6..8 do not exist but max_seq says 8: the
	// pull returns nothing, the client moves on and takes 9 directly.
	srv.set(func(s *fakeServer) { s.counters["g:1"] = 8 })
	srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:1", MaxSeq: 8})
	waitFor(t, "cursor 8", func() bool { return c.Cursors()["g:1"] == 8 })
	var before int
	srv.get(func(s *fakeServer) { before = len(s.syncs) })
	m9 := srv.addMsgs("g:1", 9)
	srv.pushProto(protocol.OpMsgPush, m9[0])
	waitFor(t, "9", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{5, 9}) })
	var after int
	srv.get(func(s *fakeServer) { after = len(s.syncs) })
	if after != before {
		t.Fatalf("contiguous push caused %d pulls", after-before)
	}
}

// A seq allocated by a concurrent sender but not stored yet is missing
// from a pull; the server does not settle it, so the client waits, pulls
// again, and delivers it in order when it exists (it was lost before
// settled_seq: the client skipped it and then dropped it as a duplicate).
func TestInFlightSeqIsWaitedFor(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1)
	cfg := testConfig(srv)
	cfg.Cursors = map[string]int64{"g:1": 1}
	_, r := startClient(t, cfg)
	srv.set(func(s *fakeServer) { s.unsettled["g:1"] = 1 })
	m3 := srv.addMsgs("g:1", 3) // 2 is still being stored
	srv.pushProto(protocol.OpMsgPush, m3[0])
	time.Sleep(3 * unsettledRetry)
	if got := msgSeqs(r, "g:1"); len(got) != 0 {
		t.Fatalf("delivered %v past an unsettled gap", got)
	}
	srv.addMsgs("g:1", 2) // stored now, never pushed
	waitFor(t, "2 and 3 in order", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{2, 3}) })
}

// A full page (more=true) whose first message is above an in-flight seq
// makes no progress; the client must wait for that seq, not give it up
// after a few quick pulls (the e2e proof test caught this losing a message
// right after a seq jump).
func TestInFlightSeqBelowFullPage(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1)
	cfg := testConfig(srv)
	cfg.Cursors = map[string]int64{"g:1": 1}
	cfg.SyncLimit = 2
	_, r := startClient(t, cfg)
	srv.set(func(s *fakeServer) { s.unsettled["g:1"] = 1 })
	later := srv.addMsgs("g:1", 3, 4, 5, 6) // 2 is still being stored
	srv.pushProto(protocol.OpMsgPush, later[0])
	time.Sleep(6 * unsettledRetry)
	if got := msgSeqs(r, "g:1"); len(got) != 0 {
		t.Fatalf("delivered %v past an in-flight seq", got)
	}
	srv.addMsgs("g:1", 2)
	waitFor(t, "2..6 in order", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{2, 3, 4, 5, 6}) })
}

func TestLyingNoticeGivesUp(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1)
	cfg := testConfig(srv)
	cfg.GapWait = time.Second
	_, r := startClient(t, cfg)
	waitFor(t, "1", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1}) })
	// The notice claims 10 but the server's pulls never return more.
	srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:1", MaxSeq: 10})
	waitFor(t, "gap error", func() bool {
		for _, e := range eventsOf[Error](r) {
			if errors.Is(e.Err, ErrGapUnfilled) {
				return true
			}
		}
		return false
	})
	var pulls int
	srv.get(func(s *fakeServer) { pulls = len(s.syncs) })
	// Pulled again every unsettledRetry or so while waiting, not in a loop.
	if limit := 3 + int(cfg.GapWait/unsettledRetry); pulls > limit {
		t.Fatalf("%d syncs in %v: pulled in a loop (limit %d)", pulls, cfg.GapWait, limit)
	}
}

func TestReconnectSyncsWhatMoved(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.addMsgs("g:1", 1, 2)
	srv.addMsgs("g:2", 1)
	c, r := startClient(t, testConfig(srv))
	waitFor(t, "initial sync", func() bool { return len(msgSeqs(r, "g:1")) == 2 && len(msgSeqs(r, "g:2")) == 1 })

	srv.kill()
	srv.addMsgs("g:1", 3, 4)
	waitFor(t, "resync", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2, 3, 4}) })
	var syncs []*protocol.Sync
	srv.get(func(s *fakeServer) { syncs = slices.Clone(s.syncs) })
	found := false
	for _, q := range syncs {
		got := map[string]int64{}
		for _, cu := range q.Cursors {
			got[cu.ConvId] = cu.Seq
		}
		found = found || (q.ConvId == "" && len(got) == 2 && got["g:1"] == 2 && got["g:2"] == 1)
	}
	if !found {
		t.Fatalf("syncs %v: none with cursors g:1=2 g:2=1", syncs)
	}
	if !slices.Equal(msgSeqs(r, "g:2"), []int64{1}) || c.Cursors()["g:1"] != 4 {
		t.Fatalf("g:2 %v, cursors %v", msgSeqs(r, "g:2"), c.Cursors())
	}
}

func TestKicked(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	_, r := startClient(t, testConfig(srv))
	srv.pushProto(protocol.OpKick, &protocol.Kick{Reason: protocol.KickReason_KICK_REASON_SLOW_CONSUMER, Message: "slow"})
	waitFor(t, "kicked and reconnected", func() bool {
		return len(eventsOf[Kicked](r)) == 1 && len(eventsOf[Connected](r)) == 2
	})
	k := eventsOf[Kicked](r)[0]
	if k.Reason != protocol.KickReason_KICK_REASON_SLOW_CONSUMER || k.Message != "slow" {
		t.Fatalf("kicked %+v", k)
	}
	var ke *KickedError
	if d := eventsOf[Disconnected](r); len(d) != 1 || !errors.As(d[0].Err, &ke) {
		t.Fatalf("disconnected %v", d)
	}
}

func TestKickedDuplicateLoginStops(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	c, err := New(testConfig(srv))
	if err != nil {
		t.Fatal(err)
	}
	r := record(c)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	waitFor(t, "connected", func() bool { return srv.connCount() == 1 })
	srv.pushProto(protocol.OpKick, &protocol.Kick{Reason: protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN})
	var ke *KickedError
	select {
	case err := <-errc:
		if !errors.As(err, &ke) || ke.Reason != protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after a duplicate-login kick")
	}
	<-r.done // Events closed
	<-c.Done()
	if !errors.As(c.Err(), &ke) {
		t.Fatalf("Err() = %v", c.Err())
	}
	c.Close()
}

func TestPushesAndRawBatch(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) {
			srv := newFakeServer(t, tr)
			_, r := startClient(t, testConfig(srv))
			waitFor(t, "cursor sync", func() bool {
				n := 0
				srv.get(func(s *fakeServer) { n = len(s.syncs) })
				return n == 1
			})
			msg, _ := proto.Marshal(&protocol.Msg{ConvId: "g:9", Seq: 1, Payload: []byte("in raw")})
			var packed []byte
			packed = protocol.AppendFrame(packed, protocol.Version, 1001, 0, []byte("a"))
			packed = protocol.AppendFrame(packed, protocol.Version, 1002, 0, []byte("b"))
			packed = protocol.AppendFrame(packed, protocol.Version, protocol.OpMsgPush, 0, msg)
			srv.pushRawBytes(protocol.AppendRawWS(nil, packed)) // outer op 9 frame
			if tr == TransportTCP {
				srv.pushRawBytes(protocol.AppendRawTCP(nil, packed[:len(packed)-protocol.HeaderLen-len(msg)]))
			}
			srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 3, Online: true})
			srv.pushProto(protocol.OpReadMark, &protocol.ReadMark{ConvId: "g:9", ReadSeq: 1, User: 3})
			waitFor(t, "presence and read mark", func() bool {
				return len(eventsOf[Presence](r)) == 1 && len(eventsOf[ReadMark](r)) == 1
			})
			var got []string
			for _, p := range eventsOf[Push](r) {
				got = append(got, string(rune('0'+p.Op-1000))+string(p.Body))
			}
			want := []string{"1a", "2b"}
			if tr == TransportTCP {
				want = append(want, "1a", "2b")
			}
			if !slices.Equal(got, want) {
				t.Fatalf("pushes %v, want %v", got, want)
			}
			if !slices.Equal(msgSeqs(r, "g:9"), []int64{1}) {
				t.Fatalf("message inside the batch not delivered")
			}
			if p := eventsOf[Presence](r)[0]; p.User != 3 || !p.Online {
				t.Fatalf("presence %v", p)
			}
		})
	}
}

func TestRequestsAndRooms(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	c, r := startClient(t, testConfig(srv))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	f, err := c.Request(ctx, 1005, []byte("ping"))
	if err != nil || f.Op != 1005 || string(f.Body) != "echo:ping" {
		t.Fatalf("Request = %+v, %v", f, err)
	}
	if err := c.ReadMark(ctx, "g:1", 7); err != nil {
		t.Fatal(err)
	}
	if err := c.ChangeRoom(ctx, "live://2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Sub(ctx, 1001, 1002); err != nil {
		t.Fatal(err)
	}
	if err := c.Unsub(ctx, 1001); err != nil {
		t.Fatal(err)
	}
	var ops []protocol.Frame
	var marks []*protocol.ReadMark
	srv.get(func(s *fakeServer) { ops = slices.Clone(s.roomOps); marks = slices.Clone(s.readMarks) })
	if len(marks) != 1 || marks[0].ConvId != "g:1" || marks[0].ReadSeq != 7 {
		t.Fatalf("read marks %v", marks)
	}
	if len(ops) != 3 || string(ops[0].Body) != "live://2" || string(ops[1].Body) != "1001,1002" || string(ops[2].Body) != "1001" {
		t.Fatalf("room ops %v", ops)
	}
	// Room and accepts survive a reconnect.
	srv.kill()
	waitFor(t, "reconnect", func() bool { return len(eventsOf[Connected](r)) == 2 })
	var auth authBody
	srv.get(func(s *fakeServer) { auth = s.auths[len(s.auths)-1] })
	if auth.RoomID != "live://2" || !slices.Equal(auth.Accepts, []int32{1002}) {
		t.Fatalf("reconnect auth %+v", auth)
	}
	if len(eventsOf[Push](r)) != 0 {
		t.Fatalf("replies leaked as pushes: %v", eventsOf[Push](r))
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	base := runtimeGoroutines()
	for i := 0; i < 3; i++ {
		c, err := New(testConfig(srv))
		if err != nil {
			t.Fatal(err)
		}
		r := record(c)
		if err := c.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Close()
		<-r.done
		if _, err := c.Send(context.Background(), User(1), 1, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Send after Close = %v", err)
		}
		if err := c.Connect(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Connect = %v", err)
		}
	}
	waitFor(t, "goroutines back to baseline", func() bool { return runtimeGoroutines() <= base })
}

func TestConnectCanceledWhileServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	base := runtimeGoroutines()
	c, err := New(Config{Addrs: []string{addr}, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := record(c)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Connect(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v", err)
	}
	<-r.done
	if len(eventsOf[Error](r)) == 0 {
		t.Fatal("no Error events for failed attempts")
	}
	waitFor(t, "goroutines back", func() bool { return runtimeGoroutines() <= base })
}

func TestSendWithIDAndLimits(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("second registration on one registry succeeded")
	}
	cfg := testConfig(srv)
	cfg.Metrics = m
	cfg.MaxBody = 1000
	cfg.MaxInboundBody = 1000
	c, r := startClient(t, cfg)
	ctx := context.Background()

	if _, err := c.Send(ctx, User(1), 1, make([]byte, 1000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Send = %v", err)
	}
	if _, err := c.Request(ctx, 1005, make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Request = %v", err)
	}
	if _, err := c.SendWithID(ctx, "", User(1), 1, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("empty id = %v", err)
	}
	id := c.NewMsgID()
	a1, err := c.SendWithID(ctx, id, User(1), 1, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := c.SendWithID(ctx, id, User(1), 1, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if a1.ClientMsgId != id || a2.Seq != a1.Seq {
		t.Fatalf("same id stored twice: %v %v", a1, a2)
	}
	// An inbound frame over MaxInboundBody is discarded without being
	// buffered; the connection goes on.
	srv.pushFrame(1001, make([]byte, 1001))
	srv.pushFrame(1001, []byte("small"))
	waitFor(t, "oversize error, then the next push", func() bool {
		var oe *OversizeError
		errs := eventsOf[Error](r)
		p := eventsOf[Push](r)
		return len(errs) == 1 && errors.As(errs[0].Err, &oe) && oe.Size == 1001 && len(p) == 1 && string(p[0].Body) == "small"
	})
	// A header claiming more than any frame may is a protocol error.
	bad := protocol.AppendFrame(nil, 1, 1001, 0, nil)
	bad[0] = 0xff
	srv.pushRawBytes(bad)
	waitFor(t, "protocol error disconnect", func() bool {
		d := eventsOf[Disconnected](r)
		return len(d) == 1 && errors.Is(d[0].Err, ErrProtocol) && len(eventsOf[Connected](r)) == 2
	})
	counters := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		counters[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	if counters["hubuim_client_sends_total"] != 2 || counters["hubuim_client_connects_total"] != 2 ||
		counters["hubuim_client_messages_received_total"] != 1 {
		t.Fatalf("counters %v", counters)
	}
}

func TestReconnectsDoNotLeakGoroutines(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	_, r := startClient(t, testConfig(srv))
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})
	base := runtimeGoroutines()
	for i := 2; i <= 6; i++ {
		srv.kill()
		waitFor(t, "reconnect", func() bool { return len(eventsOf[Connected](r)) == i && srv.connCount() == 1 })
	}
	waitFor(t, "goroutines stable", func() bool { return runtimeGoroutines() <= base })
}

func TestGoimAuthReplyAndTokenRefresh(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.goimAuth = true })
	cfg := testConfig(srv)
	cfg.Key = "my-device"
	cfg.Token = "ignored"
	var calls int
	var mu sync.Mutex
	cfg.TokenFunc = func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return fmt.Sprintf("tok-%d", calls), nil
	}
	c, r := startClient(t, cfg)
	srv.kill()
	waitFor(t, "reconnect", func() bool { return len(eventsOf[Connected](r)) == 2 })
	var auths []authBody
	srv.get(func(s *fakeServer) { auths = slices.Clone(s.auths) })
	if auths[0].Token != "tok-1" || auths[1].Token != "tok-2" || auths[1].Key != "my-device" {
		t.Fatalf("auths %+v", auths)
	}
	if c.Key() != "my-device" || c.Mid() != 42 {
		t.Fatalf("key %q mid %d", c.Key(), c.Mid())
	}
}

func TestUnansweredSyncGivesUp(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.ignoreSync = true })
	cfg := testConfig(srv)
	cfg.SendTimeout = 10 * time.Millisecond
	cfg.AckInterval = 10 * time.Millisecond
	cfg.MaxResends = 2
	_, r := startClient(t, cfg)
	srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:1", MaxSeq: 3})
	waitFor(t, "both pulls abandoned", func() bool {
		n := 0
		for _, e := range eventsOf[Error](r) {
			if errors.Is(e.Err, ErrTimeout) {
				n++
			}
		}
		return n == 2
	})
	var syncs int
	srv.get(func(s *fakeServer) { syncs = len(s.syncs) })
	if syncs != 2*(1+cfg.MaxResends) {
		t.Fatalf("%d syncs, want cursor sync and pull each sent 1+%d times", syncs, cfg.MaxResends)
	}
}

func TestOversizedPagesShrink(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) {
			srv := newFakeServer(t, tr)
			cfg := testConfig(srv)
			cfg.MaxInboundBody = 2000
			cfg.SyncLimit = 64
			_, r := startClient(t, cfg)
			waitFor(t, "cursor sync", func() bool {
				n := 0
				srv.get(func(s *fakeServer) { n = len(s.syncs) })
				return n == 1
			})
			msgs := srv.addMsgs("g:1", seqRange(1, 40)...)
			srv.set(func(s *fakeServer) {
				for _, m := range msgs {
					m.Payload = make([]byte, 150)
				}
				// seq 20 cannot be received at all
				msgs[19].Payload = make([]byte, 2500)
			})
			srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:1", MaxSeq: 40})
			want := append(seqRange(1, 19), seqRange(21, 40)...)
			waitFor(t, "all but the huge one", func() bool { return slices.Equal(msgSeqs(r, "g:1"), want) })
			var limits []int32
			srv.get(func(s *fakeServer) {
				for _, q := range s.syncs[1:] {
					limits = append(limits, q.Limit)
				}
			})
			if limits[0] != 64 || !slices.Contains(limits, 8) || !slices.Contains(limits, 1) {
				t.Fatalf("page sizes %v: want halving from 64 down to 1", limits)
			}
			var tooLarge int
			for _, e := range eventsOf[Error](r) {
				if errors.Is(e.Err, ErrTooLarge) {
					tooLarge++
				}
			}
			if tooLarge == 0 {
				t.Fatal("no Error event for the skipped message")
			}
		})
	}
}

// cursorSyncsOf returns the cursor syncs (no conv id) the server got.
func cursorSyncsOf(srv *fakeServer) []*protocol.Sync {
	var out []*protocol.Sync
	srv.get(func(s *fakeServer) {
		for _, q := range s.syncs {
			if q.ConvId == "" {
				out = append(out, q)
			}
		}
	})
	return out
}

// waitCursorSyncDone waits until a cursor sync was sent and none is
// outstanding.
func waitCursorSyncDone(t testing.TB, c *Client, srv *fakeServer) {
	t.Helper()
	waitFor(t, "cursor sync rounds end", func() bool {
		if len(cursorSyncsOf(srv)) == 0 {
			return false
		}
		c.convMu.Lock()
		defer c.convMu.Unlock()
		return c.cursorSync.seq == 0
	})
}

// waitMessages waits until n Message events were recorded (a cursor moves
// before its messages reach Events).
func waitMessages(t testing.TB, r *eventRecorder, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d messages", n), func() bool { return len(eventsOf[Message](r)) >= n })
}

func cursorMap(q *protocol.Sync) map[string]int64 {
	out := make(map[string]int64, len(q.Cursors))
	for _, cu := range q.Cursors {
		out[cu.ConvId] = cu.Seq
	}
	return out
}

func TestCursorSyncRoundsPastServerCap(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.maxConvs = 2 })
	for i := 1; i <= 5; i++ {
		srv.addMsgs(fmt.Sprintf("g:%d", i), 1, 2, 3)
	}
	cfg := testConfig(srv)
	cfg.SyncLimit = 2                 // pages: convs need a pull after their first page
	cfg.SendTimeout = 5 * time.Second // no resent round on a loaded machine
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	c, r := startClient(t, cfg)
	waitFor(t, "every conversation", func() bool {
		for i := 1; i <= 5; i++ {
			if !slices.Equal(msgSeqs(r, fmt.Sprintf("g:%d", i)), []int64{1, 2, 3}) {
				return false
			}
		}
		return true
	})
	waitCursorSyncDone(t, c, srv)
	if got := c.Cursors(); len(got) != 5 || got["g:5"] != 3 {
		t.Fatalf("cursors %v", got)
	}
	// 5 conversations at 2 per reply: rounds of 2, 2 and 1, the first two
	// with more_convs; each round carries the cursors the previous ones
	// advanced (a conversation being pulled is at its max seq).
	syncs := cursorSyncsOf(srv)
	if len(syncs) != 3 {
		t.Fatalf("%d cursor sync rounds for 5 conversations at 2 per reply, want 3", len(syncs))
	}
	want := []map[string]int64{{}, {"g:1": 3, "g:2": 3}, {"g:1": 3, "g:2": 3, "g:3": 3, "g:4": 3}}
	for i, q := range syncs {
		if got := cursorMap(q); !maps.Equal(got, want[i]) {
			t.Fatalf("round %d cursors %v, want %v", i+1, got, want[i])
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rounds := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "hubuim_client_cursor_sync_rounds_total" {
			rounds = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if rounds != 2 {
		t.Fatalf("hubuim_client_cursor_sync_rounds_total %v, want 2", rounds)
	}
	for _, e := range eventsOf[Error](r) {
		t.Errorf("error event: %v", e.Err)
	}
}

// A device with many moved conversations catches up on all of them in
// one connection, without a push or notice for any.
func TestCursorSyncCatchesUpManyConversations(t *testing.T) {
	const (
		nConvs   = 60
		maxConvs = 7
	)
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.maxConvs = maxConvs })
	saved := map[string]int64{}
	for i := 1; i <= nConvs; i++ {
		conv := fmt.Sprintf("g:%03d", i)
		srv.addMsgs(conv, 1, 2, 3, 4)
		if i%2 == 0 {
			saved[conv] = 2 // held before; seqs 3 and 4 moved
		}
	}
	cfg := testConfig(srv)
	cfg.Cursors = saved
	cfg.SendTimeout = 5 * time.Second // no resent round on a loaded machine
	c, r := startClient(t, cfg)
	waitCursorSyncDone(t, c, srv)
	waitFor(t, "every conversation", func() bool {
		got := c.Cursors()
		for i := 1; i <= nConvs; i++ {
			if got[fmt.Sprintf("g:%03d", i)] != 4 {
				return false
			}
		}
		return true
	})
	waitMessages(t, r, nConvs/2*4+nConvs/2*2)
	for i := 1; i <= nConvs; i++ {
		conv := fmt.Sprintf("g:%03d", i)
		want := []int64{1, 2, 3, 4}
		if i%2 == 0 {
			want = want[2:]
		}
		if got := msgSeqs(r, conv); !slices.Equal(got, want) {
			t.Fatalf("%s delivered %v, want %v", conv, got, want)
		}
	}
	if n, want := len(cursorSyncsOf(srv)), (nConvs+maxConvs-1)/maxConvs; n != want {
		t.Fatalf("%d cursor sync rounds, want %d", n, want)
	}
}

// A server that keeps saying more_convs while the rounds advance nothing
// gets no further round, and the app an Error event.
func TestCursorSyncStopsWithoutProgress(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.alwaysMoreConvs = true })
	srv.addMsgs("g:1", 1, 2, 3)
	cfg := testConfig(srv)
	cfg.SendTimeout = 5 * time.Second // no resent round on a loaded machine
	c, r := startClient(t, cfg)
	waitFor(t, "stall reported", func() bool {
		for _, e := range eventsOf[Error](r) {
			if errors.Is(e.Err, ErrSyncStalled) {
				return true
			}
		}
		return false
	})
	waitCursorSyncDone(t, c, srv)
	// Round 1 brought g:1 (progress), round 2 nothing.
	if n := len(cursorSyncsOf(srv)); n != 2 {
		t.Fatalf("%d cursor sync rounds, want 2", n)
	}
	if !slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2, 3}) {
		t.Fatalf("g:1 %v", msgSeqs(r, "g:1"))
	}
}

func TestCursorSyncFitsMaxBody(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.MaxBody = 200
	cfg.Cursors = map[string]int64{}
	for i := 1; i <= 50; i++ {
		cfg.Cursors[fmt.Sprintf("g:%d", i)] = 1
	}
	_, r := startClient(t, cfg)
	for _, conv := range []string{"g:7", "g:3"} {
		m := srv.addMsgs(conv, 2)
		srv.pushProto(protocol.OpMsgPush, m[0])
	}
	waitFor(t, "pushes", func() bool { return len(eventsOf[Message](r)) == 2 })
	srv.kill()
	waitFor(t, "reconnect", func() bool { return len(eventsOf[Connected](r)) == 2 })
	var last *protocol.Sync
	waitFor(t, "reconnect sync", func() bool {
		srv.get(func(s *fakeServer) { last = s.syncs[len(s.syncs)-1] })
		return len(last.Cursors) > 0 && last.Cursors[0].Seq == 2
	})
	if size := proto.Size(last); size > cfg.MaxBody {
		t.Fatalf("cursor sync of %d bytes exceeds MaxBody %d", size, cfg.MaxBody)
	}
	if len(last.Cursors) < 5 || last.Cursors[0].ConvId != "g:3" || last.Cursors[1].ConvId != "g:7" {
		t.Fatalf("cursors %v: want the most recently active first", last.Cursors)
	}
}

func TestForbiddenPullAbandoned(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.forbid = map[string]bool{"g:1": true} })
	cfg := testConfig(srv)
	cfg.SendTimeout = 20 * time.Millisecond
	cfg.AckInterval = 10 * time.Millisecond
	c, r := startClient(t, cfg)
	srv.pushProto(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:1", MaxSeq: 5})
	waitFor(t, "forbidden error", func() bool {
		for _, e := range eventsOf[Error](r) {
			var se *StatusError
			if errors.As(e.Err, &se) && se.Status == protocol.Status_STATUS_FORBIDDEN {
				return true
			}
		}
		return false
	})
	// The pull was dropped before the error was reported: no retry.
	c.convMu.Lock()
	pulling := c.convs["g:1"].pulling
	c.convMu.Unlock()
	if pulling {
		t.Fatal("forbidden pull still outstanding")
	}
	var pulls int
	srv.get(func(s *fakeServer) {
		for _, q := range s.syncs {
			if q.ConvId == "g:1" {
				pulls++
			}
		}
	})
	if pulls != 1 {
		t.Fatalf("%d pulls of a forbidden conversation, want 1", pulls)
	}
	if c.Cursors()["g:1"] != 0 {
		t.Fatalf("cursor moved: %v", c.Cursors())
	}
}

func TestCloseFlushesDeliveredAcks(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.AckInterval = time.Hour
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := record(c)
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := srv.addMsgs("g:1", 1, 2)
	srv.pushProto(protocol.OpMsgPush, msgs[0])
	srv.pushProto(protocol.OpMsgPush, msgs[1])
	waitFor(t, "messages", func() bool { return len(msgSeqs(r, "g:1")) == 2 })
	c.Close()
	<-r.done
	waitFor(t, "ack flushed at Close", func() bool {
		var acks []*protocol.MsgDeliveredAck
		srv.get(func(s *fakeServer) { acks = slices.Clone(s.delivered) })
		return len(acks) == 1 && acks[0].ConvId == "g:1" && acks[0].Seq == 2
	})
}

func TestSlowBigFrameKeepsConnectionAlive(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.HeartbeatMin = 20 * time.Millisecond
	cfg.HeartbeatMax = 20 * time.Millisecond
	cfg.HeartbeatTimeout = 60 * time.Millisecond
	cfg.MaxInboundBody = 64 << 10
	c, r := startClient(t, cfg)
	// Nothing else may be written while the frame trickles in.
	waitFor(t, "cursor sync answered", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		if n == 0 {
			return false
		}
		c.convMu.Lock()
		defer c.convMu.Unlock()
		return c.cursorSync.seq == 0
	})
	srv.set(func(s *fakeServer) { s.hbAnswer = false })
	body := make([]byte, 30<<10)
	// 30 KiB in 1 KiB steps every 10ms: ~300ms, five heartbeat timeouts.
	srv.trickle(protocol.AppendFrame(nil, protocol.Version, 1001, 0, body), 1<<10, 10*time.Millisecond)
	waitFor(t, "the big push", func() bool { return len(eventsOf[Push](r)) == 1 })
	if d := eventsOf[Disconnected](r); len(d) != 0 {
		t.Fatalf("disconnected while bytes were arriving: %v", d[0].Err)
	}
	waitFor(t, "dead once silent", func() bool {
		d := eventsOf[Disconnected](r)
		return len(d) == 1 && errors.Is(d[0].Err, ErrDeadConnection)
	})
}

func TestReorderLimitOverflowStillInOrder(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.ignoreSync = true }) // hold the pull
	cfg := testConfig(srv)
	cfg.ReorderLimit = 2
	c, r := startClient(t, cfg)
	msgs := srv.addMsgs("g:1", seqRange(1, 8)...)
	for _, i := range []int{7, 4, 5, 6} { // 8, 5, 6, 7 arrive; 1..4 missing
		srv.pushProto(protocol.OpMsgPush, msgs[i])
	}
	waitFor(t, "a pull", func() bool {
		n := 0
		srv.get(func(s *fakeServer) {
			for _, q := range s.syncs {
				if q.ConvId == "g:1" {
					n++
				}
			}
		})
		return n >= 1
	})
	c.convMu.Lock()
	buffered := len(c.convs["g:1"].buf)
	c.convMu.Unlock()
	if buffered > 2 {
		t.Fatalf("%d messages buffered, ReorderLimit is 2", buffered)
	}
	srv.set(func(s *fakeServer) { s.ignoreSync = false }) // the retry is answered
	waitFor(t, "1..8 in order", func() bool { return slices.Equal(msgSeqs(r, "g:1"), seqRange(1, 8)) })
}

func TestRequestFailsOnDisconnect(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	c, _ := startClient(t, testConfig(srv))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), 999, nil) // the fake never answers op 999
		errc <- err
	}()
	waitFor(t, "request pending", func() bool {
		s := c.session()
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 1
	})
	srv.kill()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrDisconnected) {
			t.Fatalf("Request = %v, want ErrDisconnected", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Request still waiting after the connection dropped")
	}
}

// convSyncs returns the pulls of conv the server received and when.
func convSyncs(srv *fakeServer, conv string) (reqs []*protocol.Sync, at []time.Time) {
	srv.get(func(s *fakeServer) {
		for i, q := range s.syncs {
			if q.ConvId == conv {
				reqs = append(reqs, q)
				at = append(at, s.syncTimes[i])
			}
		}
	})
	return reqs, at
}

// A gap that fills by itself within GapGrace (the ACK of the device's own
// message overtook the push of the message before it) costs no pull.
func TestGapFilledWithinGraceIsNotPulled(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.GapGrace = 300 * time.Millisecond
	_, r := startClient(t, cfg)
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})
	msgs := srv.addMsgs("g:1", 1, 2, 3)
	srv.pushProto(protocol.OpMsgPush, msgs[1]) // 2 overtakes 1
	srv.pushProto(protocol.OpMsgPush, msgs[0])
	srv.pushProto(protocol.OpMsgPush, msgs[2])
	waitFor(t, "1,2,3", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2, 3}) })
	time.Sleep(2 * cfg.GapGrace) // a pull would be due by now
	if reqs, _ := convSyncs(srv, "g:1"); len(reqs) != 0 {
		t.Fatalf("%d pulls for a gap that filled within GapGrace", len(reqs))
	}
}

// A gap that does not fill is pulled once GapGrace passed without
// progress, and the pulled messages arrive in order.
func TestStuckGapPulledAfterGrace(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.GapGrace = 150 * time.Millisecond
	_, r := startClient(t, cfg)
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})
	msgs := srv.addMsgs("g:1", 1, 2, 3, 4)
	pushed := time.Now()
	srv.pushProto(protocol.OpMsgPush, msgs[2]) // 1 and 2 were never pushed
	srv.pushProto(protocol.OpMsgPush, msgs[3])
	waitFor(t, "1..4", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2, 3, 4}) })
	reqs, at := convSyncs(srv, "g:1")
	if len(reqs) != 1 || reqs[0].FromSeq != 0 {
		t.Fatalf("pulls %v, want one from seq 0", reqs)
	}
	if waited := at[0].Sub(pushed); waited < cfg.GapGrace {
		t.Fatalf("pulled %v after the gap appeared, before GapGrace %v", waited, cfg.GapGrace)
	}
}

// With a negative GapGrace every gap is pulled at once (the behaviour
// before the grace existed).
func TestNoGapGracePullsAtOnce(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.GapGrace = -1
	c, r := startClient(t, cfg)
	waitCursorSyncDone(t, c, srv) // else its reply may bring seq 1
	msgs := srv.addMsgs("g:1", 1, 2)
	srv.pushProto(protocol.OpMsgPush, msgs[1])
	waitFor(t, "a pull", func() bool { reqs, _ := convSyncs(srv, "g:1"); return len(reqs) == 1 })
	waitFor(t, "1,2", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2}) })
}

// A delivered ack never covers a seq that is not contiguous yet, and once
// the gap is filled an ack covers the highest contiguous seq.
func TestDeliveredAckOnlyContiguous(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.ignoreSync = true }) // hold the gap open
	cfg := testConfig(srv)
	cfg.GapGrace = 10 * time.Millisecond
	_, r := startClient(t, cfg)
	msgs := srv.addMsgs("g:1", 1, 2, 3)
	srv.pushProto(protocol.OpMsgPush, msgs[0])
	srv.pushProto(protocol.OpMsgPush, msgs[2])
	acked := func() (last int64, n int, highest int64) {
		srv.get(func(s *fakeServer) {
			for _, a := range s.delivered {
				if a.ConvId == "g:1" {
					last, highest = a.Seq, max(highest, a.Seq)
					n++
				}
			}
		})
		return last, n, highest
	}
	waitFor(t, "ack 1", func() bool { last, _, _ := acked(); return last == 1 })
	waitFor(t, "the pull", func() bool { reqs, _ := convSyncs(srv, "g:1"); return len(reqs) >= 1 })
	time.Sleep(5 * cfg.AckInterval) // several flushes while 2 is missing
	if _, n, hi := acked(); hi != 1 || n != 1 {
		t.Fatalf("%d acks up to %d while seq 2 is missing; want one ack of 1", n, hi)
	}
	srv.set(func(s *fakeServer) { s.ignoreSync = false }) // the retried pull is answered
	waitFor(t, "1,2,3", func() bool { return slices.Equal(msgSeqs(r, "g:1"), []int64{1, 2, 3}) })
	waitFor(t, "ack 3", func() bool { last, _, _ := acked(); return last == 3 })
}

// A conversation that keeps moving is acked once per AckMaxDelay, not at
// every flush; once it goes quiet its last contiguous seq is acked.
func TestDeliveredAcksCoalescedWhileMoving(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.AckInterval = 100 * time.Millisecond
	cfg.AckMaxDelay = 400 * time.Millisecond
	_, r := startClient(t, cfg)
	waitFor(t, "cursor sync", func() bool {
		n := 0
		srv.get(func(s *fakeServer) { n = len(s.syncs) })
		return n == 1
	})
	const n = 200
	msgs := srv.addMsgs("g:1", seqRange(1, n)...)
	start := time.Now()
	for _, m := range msgs { // one message every 5ms: never quiet for an AckInterval
		srv.pushProto(protocol.OpMsgPush, m)
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	waitFor(t, "all messages", func() bool { return len(msgSeqs(r, "g:1")) == n })
	var acks []*protocol.MsgDeliveredAck
	waitFor(t, "ack of the last seq", func() bool {
		srv.get(func(s *fakeServer) { acks = slices.Clone(s.delivered) })
		return len(acks) > 0 && acks[len(acks)-1].Seq == n
	})
	// At most one per AckMaxDelay while moving, plus the last one (and
	// one of slack for a flush that found the stream paused).
	if limit := int(elapsed/cfg.AckMaxDelay) + 3; len(acks) > limit {
		t.Fatalf("%d acks in %v of steady traffic, want at most %d (AckMaxDelay %v)", len(acks), elapsed, limit, cfg.AckMaxDelay)
	}
	for i := 1; i < len(acks); i++ {
		if acks[i].Seq <= acks[i-1].Seq {
			t.Fatalf("acks not increasing: %v", acks)
		}
	}
}

// More conversations than one Sync has room for: each round sends the
// cursors the earlier rounds did not show up to date, so every
// conversation's cursor reaches the server and the rounds end without a
// stall.
func TestCursorSyncRoundsRotateCursorsPastMaxBody(t *testing.T) {
	const nConvs = 30
	srv := newFakeServer(t, TransportTCP)
	srv.set(func(s *fakeServer) { s.maxConvs = 4 })
	cfg := testConfig(srv)
	cfg.MaxBody = 200 // a handful of cursors per Sync
	cfg.SyncLimit = 20
	cfg.SendTimeout = 5 * time.Second
	cfg.Cursors = map[string]int64{}
	seqs := seqRange(1, 31)
	for i := 1; i <= nConvs; i++ {
		conv := fmt.Sprintf("g:%02d", i)
		srv.addMsgs(conv, seqs...)
		cfg.Cursors[conv] = 30 // one message moved while away
	}
	c, r := startClient(t, cfg)
	waitCursorSyncDone(t, c, srv)
	waitFor(t, "every conversation caught up", func() bool {
		for _, seq := range c.Cursors() {
			if seq != 31 {
				return false
			}
		}
		return true
	})
	waitMessages(t, r, nConvs)
	sent := map[string]bool{}
	syncs := cursorSyncsOf(srv)
	for _, q := range syncs {
		if size := proto.Size(q); size > cfg.MaxBody {
			t.Fatalf("cursor sync of %d bytes exceeds MaxBody %d", size, cfg.MaxBody)
		}
		for _, cu := range q.Cursors {
			sent[cu.ConvId] = true
		}
	}
	if len(sent) != nConvs {
		t.Fatalf("%d rounds sent cursors for %d of %d conversations", len(syncs), len(sent), nConvs)
	}
	if len(syncs) > nConvs {
		t.Fatalf("%d cursor sync rounds", len(syncs))
	}
	for _, e := range eventsOf[Error](r) {
		if errors.Is(e.Err, ErrSyncStalled) {
			for _, q := range syncs {
				t.Logf("round cursors %v", cursorMap(q))
			}
			t.Fatalf("stalled after %d rounds: %v", len(syncs), e.Err)
		}
	}
	for i := 1; i <= nConvs; i++ {
		conv := fmt.Sprintf("g:%02d", i)
		if got := msgSeqs(r, conv); !slices.Equal(got, []int64{31}) {
			t.Fatalf("%s delivered %v, want [31]", conv, got)
		}
	}
}

// A Request whose reply is larger than MaxInboundBody fails at once with
// ErrTooLarge (it used to wait out SendTimeout, be retried, and end in a
// "no reply" error; found by review).
func TestRequestOversizeReplyFails(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	cfg := testConfig(srv)
	cfg.MaxInboundBody = 64
	cfg.SendTimeout = 5 * time.Second
	c, _ := startClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.ReadMark(ctx, "s:42:"+strings.Repeat("7", 80), 3) // echoed back: over 64 bytes
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadMark: %v, want ErrTooLarge", err)
	}
}
