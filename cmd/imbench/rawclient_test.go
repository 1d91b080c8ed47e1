package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

func frameOf(op int32, body []byte) protocol.Frame { return protocol.Frame{Ver: 1, Op: op, Body: body} }

// fakeComet speaks just enough of the protocol: Auth (mid < 0 is
// rejected by closing), heartbeat replies, and two stamped op-1000 pushes
// after Auth, batched as OpRaw over WebSocket.
type fakeComet struct {
	heartbeats atomic.Int64
	auths      atomic.Int64
	wg         sync.WaitGroup
}

const (
	fakeHeartbeatMS = 50
	fakePushOp      = 1000
	fakePushes      = 2
)

func (fc *fakeComet) authReply(t testing.TB, f protocol.Frame) ([]byte, bool) {
	var a authBody
	if f.Op != protocol.OpAuth || json.Unmarshal(f.Body, &a) != nil || a.Mid < 0 {
		return nil, false
	}
	fc.auths.Add(1)
	body, _ := json.Marshal(authReply{Mid: a.Mid, Key: "key-" + a.Key, RoomID: a.RoomID, HeartbeatMS: fakeHeartbeatMS})
	return protocol.AppendFrame(nil, 1, protocol.OpAuthReply, f.Seq, body), true
}

func pushes() []byte {
	var b []byte
	for i := range fakePushes {
		b = protocol.AppendFrame(b, 1, fakePushOp, 0, stampedBody(stampLen, uint64(i)))
	}
	return b
}

func (fc *fakeComet) serveTCP(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); fc.wg.Wait() })
	fc.wg.Add(1)
	go func() {
		defer fc.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fc.wg.Add(1)
			go func() {
				defer fc.wg.Done()
				defer c.Close()
				var hdr [protocol.HeaderLen]byte
				br := bufio.NewReader(c)
				f, err := protocol.ReadFrame(br, &hdr, 0, nil)
				if err != nil {
					return
				}
				reply, ok := fc.authReply(t, f)
				if !ok {
					return
				}
				if _, err := c.Write(append(reply, pushes()...)); err != nil {
					return
				}
				for {
					f, err := protocol.ReadFrame(br, &hdr, 0, nil)
					if err != nil {
						return
					}
					if f.Op == protocol.OpHeartbeat {
						fc.heartbeats.Add(1)
						if err := protocol.WriteFrame(c, 1, protocol.OpHeartbeatReply, f.Seq, []byte{0, 0, 0, 1}); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func (fc *fakeComet) serveWS(t testing.TB) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != defaultWSPath {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		f, _, err := protocol.Unpack(data, 0)
		if err != nil {
			return
		}
		reply, ok := fc.authReply(t, f)
		if !ok {
			return
		}
		if ws.WriteMessage(websocket.BinaryMessage, reply) != nil {
			return
		}
		if ws.WriteMessage(websocket.BinaryMessage, protocol.AppendRawWS(nil, pushes())) != nil {
			return
		}
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if f, _, err := protocol.Unpack(data, 0); err == nil && f.Op == protocol.OpHeartbeat {
				fc.heartbeats.Add(1)
				_ = ws.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, 1, protocol.OpHeartbeatReply, f.Seq, []byte{0, 0, 0, 1}))
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitfor.Until(t, d, what, cond)
}

func TestFleetAgainstFakeComet(t *testing.T) {
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			fc := &fakeComet{}
			addr := fc.serveTCP(t)
			if transport == "ws" {
				addr = fc.serveWS(t)
			}
			const n = 5
			tr := newTracker(fakePushOp, fakePushes, n)
			fl, err := openFleet(context.Background(), fleetConfig{
				Conn: rawConfig{Addr: addr, Transport: transport, WSPath: defaultWSPath, RoomID: "bench://x"},
				N:    n, MidBase: 100, OnFrame: tr.onFrame,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			if fl.Open() != n || fc.auths.Load() != n {
				t.Fatalf("open %d, auths %d, want %d (%s)", fl.Open(), fc.auths.Load(), n, fl.FirstErr())
			}
			if got := fl.conns[0].Reply.HeartbeatMS; got != fakeHeartbeatMS {
				t.Fatalf("AuthReply heartbeat_ms %d", got)
			}
			waitFor(t, "pushes", 5*time.Second, func() bool { return tr.total.Load() == n*fakePushes })
			if miss, dup := tr.missingDup(fakePushes); miss != 0 || dup != 0 || tr.bad.Load() != 0 {
				t.Fatalf("missing %d dup %d bad %d", miss, dup, tr.bad.Load())
			}
			// heartbeat_ms from the AuthReply drives the heartbeats: every
			// connection beats at least twice within a few intervals.
			waitFor(t, "heartbeats", 5*time.Second, func() bool { return fc.heartbeats.Load() >= 2*n })
			fl.Close()
			if fl.readErrs.Load() != 0 {
				t.Fatalf("read errors after Close: %d (%s)", fl.readErrs.Load(), fl.FirstErr())
			}
		})
	}
}

func TestDialRawAuthRejected(t *testing.T) {
	for _, transport := range []string{"tcp", "ws"} {
		fc := &fakeComet{}
		addr := fc.serveTCP(t)
		if transport == "ws" {
			addr = fc.serveWS(t)
		}
		_, err := dialRaw(context.Background(), rawConfig{Addr: addr, Transport: transport, WSPath: defaultWSPath, Mid: -1, DialTimeout: 5 * time.Second})
		if !errors.Is(err, errAuthRejected) {
			t.Fatalf("%s: err %v, want errAuthRejected", transport, err)
		}
	}
}

func TestDialRawSilentServerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(2 * time.Second) // never answers Auth
		}
	}()
	start := time.Now()
	_, err = dialRaw(context.Background(), rawConfig{Addr: ln.Addr().String(), DialTimeout: 200 * time.Millisecond})
	if err == nil || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("dial to a silent server: err %v after %v", err, time.Since(start))
	}
}

func TestFleetCountsDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens
	fl, err := openFleet(context.Background(), fleetConfig{Conn: rawConfig{Addr: addr, DialTimeout: time.Second}, N: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if fl.Open() != 0 || fl.dialErrs.Load() != 3 || fl.FirstErr() == "" {
		t.Fatalf("open %d dial errors %d first %q", fl.Open(), fl.dialErrs.Load(), fl.FirstErr())
	}
}

func TestFleetRefusesBeyondFDLimit(t *testing.T) {
	lim := fdLimit()
	if lim <= 0 {
		t.Skip("no rlimit")
	}
	if _, err := openFleet(context.Background(), fleetConfig{Conn: rawConfig{Addr: "127.0.0.1:1"}, N: lim}); err == nil {
		t.Fatal("a fleet as big as the fd limit was accepted")
	}
}

func TestServerRSS(t *testing.T) {
	n, err := serverRSS(context.Background(), os.Getpid(), "")
	if err != nil || n <= 0 {
		t.Fatalf("own RSS %d %v", n, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# HELP x\nprocess_resident_memory_bytes_other 1\nprocess_resident_memory_bytes 1.2345e+07\n"))
	}))
	defer srv.Close()
	n, err = serverRSS(context.Background(), 0, srv.URL)
	if err != nil || n != 12345000 {
		t.Fatalf("metrics RSS %d %v", n, err)
	}
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer empty.Close()
	if _, err := serverRSS(context.Background(), 0, empty.URL); !errors.Is(err, errNoRSS) {
		t.Fatalf("no metric: %v", err)
	}
}
