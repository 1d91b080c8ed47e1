package job

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// nopComet answers every call at once, without a network.
type nopComet struct{ comet.CometClient }

func (nopComet) PushMsg(context.Context, *comet.PushMsgReq, ...grpc.CallOption) (*comet.PushMsgReply, error) {
	return &comet.PushMsgReply{}, nil
}

func (nopComet) PushMsgs(context.Context, *comet.PushMsgsReq, ...grpc.CallOption) (*comet.PushMsgsReply, error) {
	return &comet.PushMsgsReply{}, nil
}

func (nopComet) BroadcastRoom(context.Context, *comet.BroadcastRoomReq, ...grpc.CallOption) (*comet.BroadcastRoomReply, error) {
	return &comet.BroadcastRoomReply{}, nil
}

func (nopComet) Broadcast(context.Context, *comet.BroadcastReq, ...grpc.CallOption) (*comet.BroadcastReply, error) {
	return &comet.BroadcastReply{}, nil
}

func nopDial(discovery.Instance) (comet.CometClient, io.Closer, error) { return nopComet{}, nil, nil }

// BenchmarkRoutePush measures the per-record path of a PUSH: decode the
// record, find the comet, pick the worker, queue it (the workers drain into
// a comet stub).
func BenchmarkRoutePush(b *testing.B) {
	j, err := New(Config{}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Dial: nopDial,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	j.apply([]discovery.Instance{{ID: "a", Addrs: map[string]string{discovery.AddrGRPC: "stub"}}})
	msgs := make([]*mq.Message, 64)
	for i := range msgs {
		v, _ := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: 1001, Server: "a",
			Keys: []string{"device-" + strconv.Itoa(i)}, Msg: make([]byte, 128)})
		msgs[i] = &mq.Message{Topic: mq.TopicPush, Value: v}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := j.handle(ctx, msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoomBatchPack measures adding pushes to a room batch, packing
// them into one OpRaw body (delivery is a no-op).
func BenchmarkRoomBatchPack(b *testing.B) {
	const batch = 32
	var frames int
	r := newRoomBatcher(1<<62, batch, 1<<20, func(_ string, p *protocol.Proto, n int) { frames += n })
	msg := make([]byte, 128)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.add("live://1", 1001, msg, mq.Ack{})
	}
	b.StopTimer()
	r.close()
	if frames != b.N {
		b.Fatalf("%d frames delivered, want %d", frames, b.N)
	}
}

// countingComet counts the pushes it receives, over gRPC or in-process.
type countingComet struct {
	comet.UnimplementedCometServer
	n atomic.Int64
}

func (c *countingComet) PushMsg(context.Context, *comet.PushMsgReq) (*comet.PushMsgReply, error) {
	c.n.Add(1)
	return &comet.PushMsgReply{}, nil
}

func (c *countingComet) PushMsgs(_ context.Context, req *comet.PushMsgsReq) (*comet.PushMsgsReply, error) {
	c.n.Add(int64(len(req.Pushes)))
	return &comet.PushMsgsReply{}, nil
}

// BenchmarkPushToComet measures a push from the record to the comet
// handler: route, queue, worker, call (gRPC over loopback or in-process),
// with and without batching. It waits until every push was received.
func BenchmarkPushToComet(b *testing.B) {
	for _, bc := range []struct {
		name   string
		batch  int
		inProc bool
	}{
		{"grpc/batch=1", 1, false},
		{"grpc/batch=default", 0, false},
		{"inprocess/batch=default", 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cc := &countingComet{}
			ins := discovery.Instance{ID: "a", Addrs: map[string]string{discovery.AddrGRPC: "in-process"}}
			dial := LocalDial("a", cc, nil)
			if !bc.inProc {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				srv := grpc.NewServer()
				comet.RegisterCometServer(srv, cc)
				go func() { _ = srv.Serve(lis) }()
				defer srv.Stop()
				ins.Addrs[discovery.AddrGRPC] = lis.Addr().String()
				dial = DialGRPC
			}
			j, err := New(Config{PushBatchMax: bc.batch}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Dial: dial,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			j.apply([]discovery.Instance{ins})
			msgs := make([]*mq.Message, 256)
			for i := range msgs {
				v, _ := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: 1001, Server: "a",
					Keys: []string{"device-" + strconv.Itoa(i)}, Msg: make([]byte, 128)})
				msgs[i] = &mq.Message{Topic: mq.TopicPush, Value: v}
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := j.handle(ctx, msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
			}
			for cc.n.Load() < int64(b.N) {
				runtime.Gosched()
			}
		})
	}
}

// BenchmarkRouteRoom measures the per-record path of a ROOM push: decode
// the record, defer it, add it to its room's batch; every RoomBatchMax
// pushes the batch is handed to the comet's queue and its records are
// acknowledged.
func BenchmarkRouteRoom(b *testing.B) {
	j, err := New(Config{}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Dial: nopDial,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	j.apply([]discovery.Instance{{ID: "a", Addrs: map[string]string{discovery.AddrGRPC: "stub"}}})
	v, _ := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: 1001, Room: "live://1", Msg: make([]byte, 128)})
	msgs := make([]mq.Message, 64)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m := &msgs[i%len(msgs)]
		*m = mq.Message{Topic: mq.TopicPush, Value: v}
		if err := j.handle(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
