package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
)

// rawServer accepts TCP connections and runs script on each; it counts
// them.
func rawServer(t *testing.T, script func(c net.Conn, r *bufio.Reader)) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				script(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func rawConfig(addr string) Config {
	return Config{Addrs: []string{addr}, Mid: 1, Platform: "t",
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		SendTimeout: 100 * time.Millisecond, DialTimeout: time.Second,
		HeartbeatMin: time.Second, HeartbeatMax: time.Second, HeartbeatStep: time.Second, HeartbeatTimeout: time.Second}
}

// readAuth reads the client's Auth frame; false when the client went
// away (the script may run after its test ended: no t calls here).
func readAuth(r *bufio.Reader) (protocol.Frame, bool) {
	var hdr [protocol.HeaderLen]byte
	f, err := protocol.ReadFrame(r, &hdr, protocol.DefaultMaxBody, nil)
	return f, err == nil
}

// appendAuthReply appends the AuthReply (mid 1, key "k") to the Auth of
// frame seq seq.
func appendAuthReply(out []byte, seq int32) []byte {
	reply, _ := json.Marshal(authReply{Mid: 1, Key: "k"})
	return protocol.AppendFrame(out, protocol.Version, protocol.OpAuthReply, seq, reply)
}

func kickBody(t *testing.T, reason protocol.KickReason) []byte {
	b, err := proto.Marshal(&protocol.Kick{Reason: reason, Message: "go away"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A fatal kick read after the session was already closed for a local
// reason (the heartbeat gave up while the reader was blocked handing
// events to a slow app) still ends the client: it used to reconnect with
// the same device key and displace the device that won (found by review).
func TestFatalKickWinsOverDeadConnection(t *testing.T) {
	kick := kickBody(t, protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN)
	addr, conns := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		f, ok := readAuth(r)
		if !ok {
			return
		}
		out := appendAuthReply(nil, f.Seq)
		for _, b := range []string{"a", "b", "c"} {
			out = protocol.AppendFrame(out, protocol.Version, 1001, 0, []byte(b))
		}
		out = protocol.AppendFrame(out, protocol.Version, protocol.OpKick, 0, kick)
		_, _ = c.Write(out)
		time.Sleep(3 * time.Second) // silent: no heartbeat replies
	})
	cfg := rawConfig(addr)
	cfg.EventBuffer = 1
	cfg.HeartbeatMin, cfg.HeartbeatMax, cfg.HeartbeatStep = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	time.Sleep(800 * time.Millisecond) // the events buffer stays full; the heartbeat gives up
	go func() {
		for range c.Events() {
		}
	}()
	err = <-errc
	if _, ok := errors.AsType[*KickedError](err); !ok {
		t.Fatalf("Run: %v, want the *KickedError", err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (no reconnect after a fatal kick)", n)
	}
}

// A fatal kick as the answer to Auth ends the client after one attempt.
func TestFatalKickAtAuthStopsReconnecting(t *testing.T) {
	kick := kickBody(t, protocol.KickReason_KICK_REASON_ADMIN)
	addr, conns := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		f, ok := readAuth(r)
		if !ok {
			return
		}
		_, _ = c.Write(protocol.AppendFrame(nil, protocol.Version, protocol.OpKick, f.Seq, kick))
	})
	c, err := New(rawConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if _, ok := errors.AsType[*KickedError](err); !ok || ctx.Err() != nil {
		t.Fatalf("Run: %v, want the *KickedError before the deadline", err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// Connect that runs out of time says why the attempts failed (it used to
// return a bare deadline error).
func TestConnectReportsAuthRejection(t *testing.T) {
	addr, _ := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		f, ok := readAuth(r)
		if !ok {
			return
		}
		_, _ = c.Write(protocol.AppendFrame(nil, protocol.Version, protocol.OpDisconnectReply, f.Seq, []byte("auth rejected: bad token")))
	})
	c, err := New(rawConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = c.Connect(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrAuth) {
		t.Fatalf("Connect: %v, want the deadline joined with ErrAuth", err)
	}
}

// When a fatal kick ends the client, Err already holds it once Events is
// closed: apps (imctl listen) read Events until it closes and then ask
// Err for the exit status. Events used to close before Done, so Err could
// still say nil (CI caught imctl listen exiting 0 after a kick, once).
// A smoke check: the window was a few instructions wide and these rounds
// did not land in it in 500 tries without the fix on this machine.
func TestErrSetWhenEventsClose(t *testing.T) {
	kick := kickBody(t, protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN)
	addr, _ := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		f, ok := readAuth(r)
		if !ok {
			return
		}
		out := appendAuthReply(nil, f.Seq)
		out = protocol.AppendFrame(out, protocol.Version, protocol.OpKick, 0, kick)
		_, _ = c.Write(out)
		_, _ = c.Read(make([]byte, 1)) // until the client goes
	})
	const rounds = 50 // the window was a few instructions wide
	for i := range rounds {
		c, err := New(rawConfig(addr))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// Connect may already see the kick (loop ended before it looked).
		if err := c.Connect(ctx); err != nil {
			if _, ok := errors.AsType[*KickedError](err); !ok {
				cancel()
				t.Fatalf("round %d: connect: %v", i, err)
			}
		}
		for range c.Events() {
		}
		err = c.Err()
		cancel()
		c.Close()
		if _, ok := errors.AsType[*KickedError](err); !ok {
			t.Fatalf("round %d: Err() right after Events closed = %v, want the *KickedError", i, err)
		}
	}
}
