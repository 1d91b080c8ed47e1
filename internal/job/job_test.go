package job

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

const testOp = 1001

func TestRoutePushToNamedComet(t *testing.T) {
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	e := newTestEnv(t, Config{Workers: 4}, a, b)
	e.publish(t, "k1", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{"k1"}, Msg: []byte("hi")})
	eventually(t, func() bool { p, _, _ := a.snapshot(); return len(p) == 1 }, "comet a got no push")
	p, _, _ := a.snapshot()
	if got := p[0]; !slices.Equal(got.Keys, []string{"k1"}) || got.ProtoOp != testOp || got.Proto.Op != testOp ||
		got.Proto.Ver != protocol.Version || string(got.Proto.Body) != "hi" {
		t.Fatalf("push = %v", got)
	}

	// Many keys in one record: split by worker, all delivered.
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = "m" + strconv.Itoa(i)
	}
	e.publish(t, "multi", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: keys, Msg: []byte("x")})
	eventually(t, func() bool { return len(a.pushedKeys()) == 1+len(keys) }, "got %d keys", len(a.pushedKeys()))
	got := a.pushedKeys()[1:]
	slices.Sort(got)
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
	if pb, _, _ := b.snapshot(); len(pb) != 0 {
		t.Fatalf("comet b got %d pushes meant for a", len(pb))
	}

	// A comet discovery does not list: dropped, counted.
	e.publish(t, "k2", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "gone", Keys: []string{"k2"}})
	eventually(t, func() bool { return e.job.droppedCount(ReasonUnknownComet) == 1 }, "unknown comet not counted")
}

func TestRouteRoomAndBroadcast(t *testing.T) {
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	e := newTestEnv(t, Config{RoomBatchWindow: time.Millisecond}, a, b)
	e.publish(t, "r", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: "live://1", Msg: []byte("room")})
	e.publish(t, "all", &logic.PushMsg{Type: logic.PushMsg_BROADCAST, Operation: testOp, Speed: 100, Msg: []byte("all")})
	for _, c := range []*fakeComet{a, b} {
		eventually(t, func() bool { _, r, bc := c.snapshot(); return len(r) == 1 && len(bc) == 1 }, "comet %s: room/broadcast missing", c.id)
		_, r, bc := c.snapshot()
		if r[0].RoomId != "live://1" || r[0].Proto.Op != testOp || string(r[0].Proto.Body) != "room" {
			t.Fatalf("comet %s room push = %v", c.id, r[0])
		}
		if bc[0].Speed != 50 || bc[0].ProtoOp != testOp || string(bc[0].Proto.Body) != "all" {
			t.Fatalf("comet %s broadcast = %v, want speed 100/2 comets", c.id, bc[0])
		}
	}
	if e.job.pushCount(kindRoom) != 1 || e.job.pushCount(kindBroadcast) != 1 {
		t.Fatal("pushes by type not counted")
	}
}

func TestPerDeviceOrder(t *testing.T) {
	a := startFakeComet(t, "a")
	e := newTestEnv(t, Config{Workers: 8}, a)
	const n = 100
	devices := []string{"d0", "d1", "d2"}
	for i := range n {
		for _, d := range devices {
			e.publish(t, d, &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{d}, Msg: []byte(strconv.Itoa(i))})
		}
	}
	eventually(t, func() bool { p, _, _ := a.snapshot(); return len(p) == n*len(devices) }, "not all pushes arrived")
	next := map[string]int{}
	p, _, _ := a.snapshot()
	for _, r := range p {
		d := r.Keys[0]
		if got := string(r.Proto.Body); got != strconv.Itoa(next[d]) {
			t.Fatalf("device %s: got %s, want %d", d, got, next[d])
		}
		next[d]++
	}
}

func TestRoomBatching(t *testing.T) {
	a := startFakeComet(t, "a")
	const n, max = 10, 4
	e := newTestEnv(t, Config{RoomBatchWindow: 300 * time.Millisecond, RoomBatchMax: max}, a)
	for i := range n {
		e.publish(t, "room", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp + int32(i), Room: "r", Msg: []byte("m" + strconv.Itoa(i))})
	}
	eventually(t, func() bool { _, r, _ := a.snapshot(); return len(r) == 3 }, "want 3 batches (4+4+2)")
	_, rooms, _ := a.snapshot()
	i := 0
	for bi, r := range rooms {
		if r.RoomId != "r" || r.Proto.Op != protocol.OpRaw {
			t.Fatalf("batch %d: room %q op %d, want OpRaw", bi, r.RoomId, r.Proto.Op)
		}
		err := protocol.SplitRaw(r.Proto.Body, 0, func(f protocol.Frame) error {
			if f.Op != testOp+int32(i) || string(f.Body) != "m"+strconv.Itoa(i) || f.Ver != protocol.Version || f.Seq != 0 {
				return fmt.Errorf("frame %d: op %d body %q", i, f.Op, f.Body)
			}
			i++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if i != n {
		t.Fatalf("%d frames in the batches, want %d", i, n)
	}
	// The last partial batch went out on its timer; nothing is left open.
	if open := e.job.rooms.open(); open != 0 {
		t.Fatalf("%d room batches still open", open)
	}
}

func TestCloseFlushesRoomBatch(t *testing.T) {
	a := startFakeComet(t, "a")
	e := newTestEnv(t, Config{RoomBatchWindow: time.Hour}, a)
	e.publish(t, "room", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: "r", Msg: []byte("1")})
	e.publish(t, "room", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: "r", Msg: []byte("2")})
	eventually(t, func() bool { return e.job.pushCount(kindRoom) == 2 }, "room pushes not consumed")
	if _, r, _ := a.snapshot(); len(r) != 0 {
		t.Fatal("batch sent before its window")
	}
	if err := e.job.Close(); err != nil {
		t.Fatal(err)
	}
	_, r, _ := a.snapshot()
	if len(r) != 1 || r[0].Proto.Op != protocol.OpRaw {
		t.Fatalf("after Close: %d room calls, want one OpRaw batch", len(r))
	}
}

// A comet whose PushMsg hangs must not hold up another comet for longer
// than one EnqueueTimeout, even when both are fed from one partition.
func TestSlowCometIsolation(t *testing.T) {
	slow, fast := startFakeComet(t, "slow"), startFakeComet(t, "fast")
	slow.block = make(chan struct{})
	defer close(slow.block)
	const enqueueTimeout = 200 * time.Millisecond
	e := newTestEnv(t, Config{Workers: 1, QueueSize: 2, EnqueueTimeout: enqueueTimeout, RPCTimeout: time.Hour, PushBatchMax: 1}, slow, fast)
	const toSlow = 50 // without the congestion rule: 50 × 200ms = 10s
	for i := range toSlow {
		e.publish(t, "one-partition", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "slow", Keys: []string{"s" + strconv.Itoa(i)}})
	}
	start := time.Now()
	e.publish(t, "one-partition", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "fast", Keys: []string{"f"}})
	eventually(t, func() bool { p, _, _ := fast.snapshot(); return len(p) == 1 }, "fast comet never got its push")
	if d := time.Since(start); d > 5*enqueueTimeout {
		t.Fatalf("fast comet waited %s behind the slow one", d)
	}
	// 1 in flight + 2 queued; the rest dropped and counted.
	if got := e.job.droppedCount(ReasonQueueFull); got != toSlow-3 {
		t.Fatalf("queue_full drops = %v, want %d", got, toSlow-3)
	}
}

func TestCometRemovedDropsPending(t *testing.T) {
	slow, fast := startFakeComet(t, "slow"), startFakeComet(t, "fast")
	slow.block = make(chan struct{})
	defer close(slow.block)
	e := newTestEnv(t, Config{Workers: 1, QueueSize: 8, RPCTimeout: time.Hour, CometGrace: -1}, slow, fast)
	for i := range 5 {
		e.publish(t, "p", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "slow", Keys: []string{"s" + strconv.Itoa(i)}})
	}
	eventually(t, func() bool { return e.job.pushCount(kindPush) == 5 }, "pushes not consumed")
	e.static.Set(discovery.ServiceComet, []discovery.Instance{fast.instance()})
	// 1 in flight (cancelled) + 4 queued.
	eventually(t, func() bool { return e.job.droppedCount(ReasonCometRemoved) == 5 }, "comet_removed drops = %v, want 5", e.job.droppedCount(ReasonCometRemoved))
	e.publish(t, "p", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "fast", Keys: []string{"f"}})
	eventually(t, func() bool { p, _, _ := fast.snapshot(); return len(p) == 1 }, "fast comet stalled after removal")
	e.publish(t, "p", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "slow", Keys: []string{"late"}})
	eventually(t, func() bool { return e.job.droppedCount(ReasonUnknownComet) == 1 }, "push to removed comet not counted")
}

// A comet that leaves discovery keeps getting its pushes for CometGrace:
// one that comes back within it keeps its client (nothing dropped); one
// that stays away is removed after it. Job used to remove it at once, and
// a live comet whose etcd lease lapsed lost its pushes until it
// re-registered.
func TestCometGraceKeepsPushes(t *testing.T) {
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	const grace = time.Second // the steps while a is away must fit in it
	e := newTestEnv(t, Config{CometGrace: grace}, a, b)
	pushTo := func(key string) {
		e.publish(t, key, &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{key}})
	}
	delivered := func(n int) func() bool {
		return func() bool { p, _, _ := a.snapshot(); return len(p) == n }
	}
	eventually(t, func() bool { return e.job.view.Load().byID["a"] != nil }, "a not added")
	before := e.job.view.Load().byID["a"]
	e.static.Set(discovery.ServiceComet, []discovery.Instance{b.instance()}) // a's lease lapsed
	leaving := func() bool {
		e.job.mu.Lock()
		defer e.job.mu.Unlock()
		return e.job.leaving["a"] != nil
	}
	eventually(t, leaving, "a not kept as leaving")
	if e.job.view.Load().byID["a"] != before {
		t.Fatal("a's client not kept while leaving")
	}
	pushTo("k1")
	eventually(t, delivered(1), "push to a leaving comet not delivered")
	e.static.Set(discovery.ServiceComet, []discovery.Instance{a.instance(), b.instance()}) // re-registered
	time.Sleep(grace + grace/2)
	if leaving() {
		t.Fatal("a still leaving after it came back")
	}
	if c := e.job.view.Load().byID["a"]; c != before {
		t.Fatalf("a's client replaced or removed after it came back within the grace period: %p vs %p", c, before)
	}
	pushTo("k2")
	eventually(t, delivered(2), "push after coming back not delivered")

	e.static.Set(discovery.ServiceComet, []discovery.Instance{b.instance()}) // gone for good
	eventually(t, func() bool { return e.job.view.Load().byID["a"] == nil }, "a not removed after the grace period")
	pushTo("k3")
	eventually(t, func() bool { return e.job.droppedCount(ReasonUnknownComet) == 1 }, "push to a removed comet not counted")
	if p, _, _ := a.snapshot(); len(p) != 2 {
		t.Fatalf("a got %d pushes, want 2", len(p))
	}
	if got := e.job.droppedCount(ReasonCometRemoved); got != 0 {
		t.Fatalf("comet_removed drops = %v, want 0", got)
	}
}

// A comet that said it was draining is removed as soon as it leaves
// discovery: it leaves after closing its connections and its gRPC server,
// so keeping it would only fail and retry pushes for the grace period.
func TestDrainingCometRemovedAtOnce(t *testing.T) {
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	e := newTestEnv(t, Config{CometGrace: time.Hour}, a, b)
	eventually(t, func() bool { return e.job.view.Load().byID["a"] != nil }, "a not added")
	draining := a.instance()
	draining.Draining = true
	e.static.Set(discovery.ServiceComet, []discovery.Instance{draining, b.instance()})
	eventually(t, func() bool {
		e.job.mu.Lock()
		defer e.job.mu.Unlock()
		return e.job.draining["a"]
	}, "a's draining not seen")
	e.static.Set(discovery.ServiceComet, []discovery.Instance{b.instance()})
	eventually(t, func() bool { return e.job.view.Load().byID["a"] == nil }, "a draining comet kept for the grace period")
}

func TestRetryTransientErrors(t *testing.T) {
	a := startFakeComet(t, "a")
	a.failFirst = 2
	e := newTestEnv(t, Config{RetryBackoff: 5 * time.Millisecond}, a)
	e.publish(t, "k", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{"k"}})
	eventually(t, func() bool { p, _, _ := a.snapshot(); return len(p) == 1 }, "push not delivered after retries")
	if got := counterValue(e.job.metrics.rpcErrors.WithLabelValues(methodPushMsg)); got != 2 {
		t.Fatalf("rpc errors = %v, want 2", got)
	}
}

func TestBadRecordIsSkipped(t *testing.T) {
	a := startFakeComet(t, "a")
	e := newTestEnv(t, Config{}, a)
	if err := e.mem.Publish(context.Background(), mq.TopicPush, []byte("k"), []byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "k", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{"k"}})
	eventually(t, func() bool { p, _, _ := a.snapshot(); return len(p) == 1 }, "valid record after a bad one not delivered")
	if e.job.droppedCount(ReasonBadRecord) != 1 {
		t.Fatal("bad record not counted")
	}
}

func TestCloseStopsAllGoroutines(t *testing.T) {
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	base := runtime.NumGoroutine()
	mem, err := mq.NewMemory(mq.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	static := discovery.NewStatic(a.instance(), b.instance())
	cons := mem.Consumer("job", mq.TopicPush)
	j, err := New(Config{Workers: 16, RoomBatchWindow: time.Hour}, Deps{Consumer: cons, Watcher: static})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(context.Background()) }()
	e := &testEnv{mem: mem, job: j}
	e.publish(t, "k", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{"k"}})
	e.publish(t, "r", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: "r"})
	eventually(t, func() bool { p, _, _ := a.snapshot(); return len(p) == 1 && j.rooms.open() == 1 }, "not consumed")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	if err := j.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run on a closed job = %v", err)
	}
	_ = cons.Close()
	_ = static.Close()
	_ = mem.Close()
	waitGoroutines(t, base)
	if _, r, _ := b.snapshot(); len(r) != 1 {
		t.Fatal("room batch not flushed to comet b on Close")
	}
}

func TestConfigErrors(t *testing.T) {
	deps := Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic()}
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Workers: -1}, "job.workers"},
		{Config{QueueSize: -5}, "job.queue_size"},
		{Config{PushBatchMax: -1}, "job.push_batch_max"},
		{Config{PushBatchBytes: -1}, "job.push_batch_bytes"},
		{Config{RetryBackoff: time.Second, MaxRetryBackoff: time.Millisecond}, "job.max_retry_backoff"},
	} {
		_, err := New(tc.cfg, deps)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("New(%+v) = %v, want FieldError on %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := New(Config{}, Deps{Watcher: discovery.NewStatic()}); err == nil {
		t.Error("New without a consumer succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Registerer: reg}); err == nil {
		t.Error("second registration in one registry succeeded")
	}
}

type noConsumer struct{}

func (noConsumer) Run(ctx context.Context, _ mq.Handler) error { <-ctx.Done(); return nil }
func (noConsumer) Close() error                                { return nil }

// A listed comet that refuses connections is retried; when discovery drops
// it, its pending push is dropped and counted.
func TestUnreachableCometRetriedUntilRemoved(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := lis.Addr().String()
	_ = lis.Close()
	dead := discovery.Instance{ID: "dead", Service: discovery.ServiceComet, Addrs: map[string]string{discovery.AddrGRPC: deadAddr}}
	e := newTestEnv(t, Config{RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond, CometGrace: 50 * time.Millisecond})
	e.static.Set(discovery.ServiceComet, []discovery.Instance{dead})
	eventually(t, func() bool { return e.job.view.Load().byID["dead"] != nil }, "comet not added")
	e.publish(t, "k", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "dead", Keys: []string{"k"}})
	eventually(t, func() bool { return counterValue(e.job.metrics.rpcErrs[methodPushMsg]) >= 3 }, "no retries")
	if got := e.job.droppedCount(ReasonCometRemoved); got != 0 {
		t.Fatalf("dropped while still listed: %v", got)
	}
	e.static.Set(discovery.ServiceComet, nil)
	eventually(t, func() bool { return e.job.droppedCount(ReasonCometRemoved) == 1 }, "pending push not dropped on removal")
}

func TestRunAgainAfterCancel(t *testing.T) {
	j, err := New(Config{}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- j.Run(ctx) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	}
}

// A room push or broadcast while discovery lists no comet is counted as
// dropped (it used to be acknowledged without a trace; found by review).
func TestNoCometsCounted(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.publish(t, "all", &logic.PushMsg{Type: logic.PushMsg_BROADCAST, Operation: testOp, Msg: []byte("x")})
	e.publish(t, "r", &logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: "live://1", Msg: []byte("y")})
	eventually(t, func() bool { return e.job.droppedCount(ReasonNoComets) == 2 }, "no_comets drops = %v, want 2", e.job.droppedCount(ReasonNoComets))
}
