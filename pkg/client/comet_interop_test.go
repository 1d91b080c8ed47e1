//go:build comet_interop

// Interop check of the SDK against the real comet (internal/comet) with an
// in-process fake logic. Behind a build tag so that comet API changes do
// not break this package's tests:
//
//	go test -race -tags comet_interop -run Comet ./pkg/client/
package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/comet"
)

// fakeLogic answers comet like logic would, from memory.
type fakeLogic struct {
	mu    sync.Mutex
	keyN  int
	seq   map[string]int64
	acks  map[string]*protocol.MsgSendAck
	marks []*protocol.ReadMark
}

func (l *fakeLogic) Connect(_ context.Context, in *logic.ConnectReq, _ ...grpc.CallOption) (*logic.ConnectReply, error) {
	var a authBody
	if err := json.Unmarshal(in.Token, &a); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.Key == "" {
		l.keyN++
		a.Key = fmt.Sprintf("k%d", l.keyN)
	}
	return &logic.ConnectReply{Mid: a.Mid, Key: a.Key, RoomId: a.RoomID, Accepts: a.Accepts, HeartbeatMs: 100, Platform: a.Platform}, nil
}

func (l *fakeLogic) Disconnect(context.Context, *logic.DisconnectReq, ...grpc.CallOption) (*logic.DisconnectReply, error) {
	return &logic.DisconnectReply{}, nil
}

func (l *fakeLogic) Heartbeat(context.Context, *logic.HeartbeatReq, ...grpc.CallOption) (*logic.HeartbeatReply, error) {
	return &logic.HeartbeatReply{}, nil
}

func (l *fakeLogic) RenewOnline(context.Context, *logic.OnlineReq, ...grpc.CallOption) (*logic.OnlineReply, error) {
	return &logic.OnlineReply{}, nil
}

func (l *fakeLogic) Receive(_ context.Context, in *logic.ReceiveReq, _ ...grpc.CallOption) (*logic.ReceiveReply, error) {
	p := in.Proto
	reply := func(op int32, m proto.Message) (*logic.ReceiveReply, error) {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return &logic.ReceiveReply{Proto: &protocol.Proto{Ver: protocol.Version, Op: op, Seq: p.Seq, Body: b}}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch p.Op {
	case protocol.OpMsgSend:
		var m protocol.MsgSend
		if err := proto.Unmarshal(p.Body, &m); err != nil {
			return nil, err
		}
		if ack, ok := l.acks[m.ClientMsgId]; ok {
			return reply(protocol.OpMsgSendAck, ack)
		}
		conv := convID(in.Mid, &m)
		if l.seq == nil {
			l.seq, l.acks = map[string]int64{}, map[string]*protocol.MsgSendAck{}
		}
		l.seq[conv]++
		ack := &protocol.MsgSendAck{ClientMsgId: m.ClientMsgId, ConvId: conv, Seq: l.seq[conv], MsgId: 1}
		l.acks[m.ClientMsgId] = ack
		return reply(protocol.OpMsgSendAck, ack)
	case protocol.OpSync:
		return reply(protocol.OpSyncReply, &protocol.SyncReply{})
	case protocol.OpReadMark:
		var rm protocol.ReadMark
		if err := proto.Unmarshal(p.Body, &rm); err != nil {
			return nil, err
		}
		l.marks = append(l.marks, &rm)
		return reply(protocol.OpReadMarkReply, &protocol.ReadMarkReply{ConvId: rm.ConvId, ReadSeq: rm.ReadSeq})
	}
	return &logic.ReceiveReply{}, nil
}

func TestCometInterop(t *testing.T) {
	fl := &fakeLogic{}
	srv, err := comet.New(comet.Config{ID: "c1", TCPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0"}, comet.Deps{Logic: fl})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addrs := srv.Addrs()
	api := srv.API()
	for _, tr := range []struct{ name, addr string }{{"tcp", "tcp://" + addrs.TCP}, {"ws", "ws://" + addrs.WS}} {
		addr := tr.addr
		t.Run(tr.name, func(t *testing.T) {
			c, r := startClient(t, Config{
				Addrs: []string{addr}, Mid: 42, Platform: "test", RoomID: "live://1", Accepts: []int32{1001},
				HeartbeatMin: 20 * time.Millisecond, HeartbeatMax: time.Second, HeartbeatStep: 20 * time.Millisecond,
				HeartbeatTimeout: time.Second, SendTimeout: time.Second,
			})
			key := c.Key()
			if key == "" {
				t.Fatal("no key assigned")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ack, err := c.Send(ctx, User(7), 1, []byte("hi"))
			if err != nil || ack.Seq < 1 {
				t.Fatalf("Send = %v, %v", ack, err)
			}
			if err := c.ReadMark(ctx, ack.ConvId, ack.Seq); err != nil {
				t.Fatal(err)
			}
			if err := c.ChangeRoom(ctx, "live://2"); err != nil {
				t.Fatal(err)
			}
			if err := c.Sub(ctx, 1002); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "heartbeat interval capped at comet's 100ms", func() bool {
				return c.HeartbeatInterval() == 100*time.Millisecond
			})
			if _, err := api.PushMsg(ctx, &cometapi.PushMsgReq{Keys: []string{key}, ProtoOp: 1002,
				Proto: &protocol.Proto{Op: 1002, Body: []byte("biz")}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "push", func() bool {
				p := eventsOf[Push](r)
				return len(p) == 1 && p[0].Op == 1002 && string(p[0].Body) == "biz"
			})
			if _, err := api.Kick(ctx, &cometapi.KickReq{Keys: []string{key}, Reason: protocol.KickReason_KICK_REASON_TOKEN_EXPIRED}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "kicked and back", func() bool {
				return len(eventsOf[Kicked](r)) == 1 && len(eventsOf[Connected](r)) == 2
			})
			if c.Key() != key {
				t.Fatalf("key changed across reconnect: %q -> %q", key, c.Key())
			}
		})
	}
}
