package comet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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
	e := startServerWith(t,
		func(f *fakeLogic) logic.LogicServer {
			return slowConnectLogic{fakeLogic: f, delay: 400 * time.Millisecond}
		},
		func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	s, f := e.s, e.logic
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

// downReceiveLogic accepts connections but cannot answer client frames.
type downReceiveLogic struct{ *fakeLogic }

func (downReceiveLogic) Receive(context.Context, *logic.ReceiveReq) (*logic.ReceiveReply, error) {
	return nil, status.Error(codes.Unavailable, "store down")
}

// When logic cannot answer an IM request, the client gets the request's
// reply with STATUS_UNAVAILABLE at once (matched by its client message id
// or frame seq) instead of silence until its own timeout (found by
// review); a goim op without a status reply still gets nothing.
func TestLogicDownRepliesUnavailable(t *testing.T) {
	e := startServerWith(t, func(f *fakeLogic) logic.LogicServer { return downReceiveLogic{f} }, nil)
	c := e.tcpClient(t, "k", "")

	send, _ := proto.Marshal(&protocol.MsgSend{ClientMsgId: "m1", ConvType: protocol.ConvType_CONV_TYPE_SINGLE, To: 2})
	c.send(protocol.OpMsgSend, 11, send)
	var ack protocol.MsgSendAck
	if fr := c.expect(protocol.OpMsgSendAck); fr.Seq != 11 || proto.Unmarshal(fr.Body, &ack) != nil ||
		ack.ClientMsgId != "m1" || ack.Status != protocol.Status_STATUS_UNAVAILABLE || ack.Reason == "" {
		t.Fatalf("MsgSendAck seq %d: %v", fr.Seq, &ack)
	}
	c.send(protocol.OpSync, 12, nil)
	var sr protocol.SyncReply
	if fr := c.expect(protocol.OpSyncReply); fr.Seq != 12 || proto.Unmarshal(fr.Body, &sr) != nil || sr.Status != protocol.Status_STATUS_UNAVAILABLE {
		t.Fatalf("SyncReply seq %d: %v", fr.Seq, &sr)
	}
	rm, _ := proto.Marshal(&protocol.ReadMark{ConvId: "s:1:2", ReadSeq: 5})
	c.send(protocol.OpReadMark, 13, rm)
	var rr protocol.ReadMarkReply
	if fr := c.expect(protocol.OpReadMarkReply); fr.Seq != 13 || proto.Unmarshal(fr.Body, &rr) != nil ||
		rr.ConvId != "s:1:2" || rr.ReadSeq != 5 || rr.Status != protocol.Status_STATUS_UNAVAILABLE {
		t.Fatalf("ReadMarkReply seq %d: %v", fr.Seq, &rr)
	}
	c.send(protocol.OpSendMsg, 14, []byte("goim"))
	c.send(protocol.OpHeartbeat, 15, nil)
	if fr := c.expect(protocol.OpHeartbeatReply); fr.Seq != 15 {
		t.Fatalf("heartbeat reply seq %d (the goim op must get no reply)", fr.Seq)
	}
}
