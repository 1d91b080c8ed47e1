package job

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

const testTimeout = 10 * time.Second

// fakeComet is a real gRPC comet server on 127.0.0.1:0 that records calls.
type fakeComet struct {
	comet.UnimplementedCometServer
	id   string
	addr string

	mu         sync.Mutex
	pushes     []*comet.PushMsgReq
	rooms      []*comet.BroadcastRoomReq
	broadcasts []*comet.BroadcastReq
	block      chan struct{} // PushMsg waits for it (or the call's ctx) when set
	failFirst  int           // PushMsg answers Unavailable this many times
	calls      int
	noBatch    bool  // PushMsgs answers Unimplemented (an older comet)
	batches    []int // sizes of the PushMsgs calls received
}

func startFakeComet(tb testing.TB, id string) *fakeComet {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeComet{id: id, addr: lis.Addr().String()}
	srv := grpc.NewServer()
	comet.RegisterCometServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	return f
}

func (f *fakeComet) instance() discovery.Instance {
	return discovery.Instance{ID: f.id, Service: discovery.ServiceComet, Addrs: map[string]string{discovery.AddrGRPC: f.addr}}
}

func (f *fakeComet) PushMsg(ctx context.Context, req *comet.PushMsgReq) (*comet.PushMsgReply, error) {
	f.mu.Lock()
	f.calls++
	block, fail := f.block, f.calls <= f.failFirst
	f.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "not yet")
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	f.pushes = append(f.pushes, req)
	f.mu.Unlock()
	return &comet.PushMsgReply{}, nil
}

// PushMsgs is one call (failFirst and block apply to it as a whole) that
// records every push in order.
func (f *fakeComet) PushMsgs(ctx context.Context, req *comet.PushMsgsReq) (*comet.PushMsgsReply, error) {
	f.mu.Lock()
	if f.noBatch {
		f.mu.Unlock()
		return nil, status.Error(codes.Unimplemented, "no PushMsgs")
	}
	f.calls++
	block, fail := f.block, f.calls <= f.failFirst
	f.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "not yet")
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	for _, p := range req.Pushes { // in-process callers reuse requests
		f.pushes = append(f.pushes, proto.Clone(p).(*comet.PushMsgReq))
	}
	f.batches = append(f.batches, len(req.Pushes))
	f.mu.Unlock()
	return &comet.PushMsgsReply{}, nil
}

func (f *fakeComet) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}

func (f *fakeComet) BroadcastRoom(_ context.Context, req *comet.BroadcastRoomReq) (*comet.BroadcastRoomReply, error) {
	f.mu.Lock()
	f.rooms = append(f.rooms, req)
	f.mu.Unlock()
	return &comet.BroadcastRoomReply{}, nil
}

func (f *fakeComet) Broadcast(_ context.Context, req *comet.BroadcastReq) (*comet.BroadcastReply, error) {
	f.mu.Lock()
	f.broadcasts = append(f.broadcasts, req)
	f.mu.Unlock()
	return &comet.BroadcastReply{}, nil
}

func (f *fakeComet) snapshot() (pushes []*comet.PushMsgReq, rooms []*comet.BroadcastRoomReq, bcasts []*comet.BroadcastReq) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(pushes, f.pushes...), append(rooms, f.rooms...), append(bcasts, f.broadcasts...)
}

// pushedKeys lists every key pushed to f, in arrival order.
func (f *fakeComet) pushedKeys() []string {
	p, _, _ := f.snapshot()
	var keys []string
	for _, r := range p {
		keys = append(keys, r.Keys...)
	}
	return keys
}

// testEnv is a Job consuming an in-process queue, with comets listed in a
// static registry.
type testEnv struct {
	mem    *mq.Memory
	static *discovery.Static
	job    *Job
	done   chan error
}

func newTestEnv(tb testing.TB, cfg Config, comets ...*fakeComet) *testEnv {
	tb.Helper()
	mem, err := mq.NewMemory(mq.MemoryConfig{Partitions: 4, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	var list []discovery.Instance
	for _, c := range comets {
		list = append(list, c.instance())
	}
	static := discovery.NewStatic(list...)
	cons := mem.Consumer("job", mq.TopicPush)
	j, err := New(cfg, Deps{Consumer: cons, Watcher: static, Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	e := &testEnv{mem: mem, static: static, job: j, done: make(chan error, 1)}
	go func() { e.done <- j.Run(context.Background()) }()
	tb.Cleanup(func() {
		_ = j.Close()
		<-e.done
		_ = cons.Close()
		_ = static.Close()
		_ = mem.Close()
	})
	return e
}

func (e *testEnv) publish(tb testing.TB, key string, pm *logic.PushMsg) {
	tb.Helper()
	b, err := proto.Marshal(pm)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.mem.Publish(context.Background(), mq.TopicPush, []byte(key), b); err != nil {
		tb.Fatal(err)
	}
}

func eventually(tb testing.TB, cond func() bool, format string, args ...any) {
	tb.Helper()
	waitfor.Until(tb, testTimeout, fmt.Sprintf(format, args...), cond)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func (j *Job) droppedCount(reason string) float64 { return counterValue(j.metrics.dropped[reason]) }

func (j *Job) pushCount(kind string) float64 { return counterValue(j.metrics.pushByKind[kind]) }

// waitGoroutines polls until at most n goroutines run.
func waitGoroutines(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.Now().Add(testTimeout)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			tb.Fatalf("%d goroutines, want <= %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
