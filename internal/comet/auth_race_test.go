package comet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
)

// slowConnectLogic answers Connect late for the token "slow".
type slowConnectLogic struct {
	*fakeLogic
	delay time.Duration
}

func (s slowConnectLogic) Connect(ctx context.Context, req *logic.ConnectReq) (*logic.ConnectReply, error) {
	var a authBody
	_ = json.Unmarshal(req.GetToken(), &a)
	if a.Token == "slow" {
		time.Sleep(s.delay)
	}
	return s.fakeLogic.Connect(ctx, req)
}

// A connection whose handshake deadline passes while logic is still
// answering its Connect is not registered: it used to be, and kicked the
// live connection with its key on its way out (found by review).
func TestHandshakeExpiredDuringConnectKicksNoOne(t *testing.T) {
	f := &fakeLogic{onlineMul: 1}
	lc := startLogic(t, slowConnectLogic{fakeLogic: f, delay: 400 * time.Millisecond})
	cfg := testConfig()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.WSAddr, cfg.GRPCAddr = "", ""
	s, err := New(cfg, Deps{Logic: lc, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	e := &env{s: s, logic: f}
	a := e.tcpClient(t, "K", "")
	b := dialTCP(t, s.Addrs().TCP)
	body, _ := json.Marshal(authBody{Mid: 1, Key: "K", Token: "slow"})
	b.send(protocol.OpAuth, 1, body)
	for { // B: the timeout, then the close
		fr, err := b.read(2 * time.Second)
		if err != nil {
			break
		}
		if fr.Op == protocol.OpAuthReply {
			t.Fatal("B was authenticated after its handshake expired")
		}
	}
	eventually(t, "logic told of B's end", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.disconnects) == 1
	})
	if fr, err := a.read(300 * time.Millisecond); err == nil {
		t.Fatalf("A (live) got op %d %q after B's handshake expired", fr.Op, fr.Body)
	}
	if n := s.Conns(); n != 1 {
		t.Fatalf("%d connections, want A alone", n)
	}
	a.send(protocol.OpHeartbeat, 2, nil)
	a.expect(protocol.OpHeartbeatReply)
}

// The AuthReply is the first frame a client gets, even when pushes to its
// room start before its auth completes (13 of 300 clients got a room frame
// first before the fix; found by review).
func TestAuthReplyIsFirstFrame(t *testing.T) {
	e := startServer(t, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = e.s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{RoomId: "r", Proto: &protocol.Proto{Op: markerOp, Body: []byte("x")}})
		}
	})
	defer func() { close(stop); wg.Wait() }()
	const clients = 300
	for i := range clients {
		c := dialTCP(t, e.s.Addrs().TCP)
		body, _ := json.Marshal(authBody{Mid: 1, Key: fmt.Sprint("k", i), RoomID: "r"})
		c.send(protocol.OpAuth, 1, body)
		f, err := c.read(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Op != protocol.OpAuthReply {
			t.Fatalf("client %d: first frame op %d, want AuthReply", i, f.Op)
		}
		_ = c.nc.Close()
	}
}
