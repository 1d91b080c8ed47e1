package job

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
)

func (f *fakeComet) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// queueBehindBlockedCall publishes one push that blocks in the comet, then
// n pushes per device (interleaved) that queue behind it, and returns once
// all are queued. The caller closes a.block to let them through.
func queueBehindBlockedCall(t *testing.T, e *testEnv, a *fakeComet, devices []string, n int) {
	t.Helper()
	e.publish(t, "p", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{"first"}, Msg: []byte("first")})
	eventually(t, func() bool { return a.callCount() == 1 }, "first push never reached the comet")
	for i := range n {
		for _, d := range devices {
			e.publish(t, "p", &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{d}, Msg: []byte(strconv.Itoa(i))})
		}
	}
	want := float64(1 + n*len(devices))
	eventually(t, func() bool { return e.job.pushCount(kindPush) == want }, "pushes not consumed")
}

// checkOrder fails unless every device's pushes arrived as 0, 1, 2, ...
func checkOrder(t *testing.T, a *fakeComet, devices []string, n int) {
	t.Helper()
	eventually(t, func() bool { return len(a.pushedKeys()) == 1+n*len(devices) }, "got %d pushes", len(a.pushedKeys()))
	next := map[string]int{}
	p, _, _ := a.snapshot()
	for _, r := range p[1:] {
		d := r.Keys[0]
		if got := string(r.Proto.Body); got != strconv.Itoa(next[d]) {
			t.Fatalf("device %s: got %s, want %d", d, got, next[d])
		}
		next[d]++
	}
}

func TestPushBatchKeepsOrder(t *testing.T) {
	a := startFakeComet(t, "a")
	a.block = make(chan struct{})
	const batchMax = 16
	e := newTestEnv(t, Config{Workers: 1, PushBatchMax: batchMax, RPCTimeout: time.Hour}, a)
	devices := []string{"d0", "d1", "d2"}
	const n = 40
	queueBehindBlockedCall(t, e, a, devices, n)
	close(a.block)
	checkOrder(t, a, devices, n)
	sizes := a.batchSizes()
	if len(sizes) == 0 || slices.Max(sizes) != batchMax {
		t.Fatalf("PushMsgs batch sizes %v, want full batches of %d", sizes, batchMax)
	}
	total := 0
	for _, s := range sizes {
		total += s
	}
	// Everything queued behind the blocked call went in batches.
	if total != n*len(devices) {
		t.Fatalf("%d pushes in PushMsgs calls, want %d", total, n*len(devices))
	}
}

func TestPushBatchBytesLimit(t *testing.T) {
	a := startFakeComet(t, "a")
	a.block = make(chan struct{})
	// A push of device "dX" and a one- or two-digit body is 3 or 4 bytes:
	// 10 bytes fit three pushes at most.
	e := newTestEnv(t, Config{Workers: 1, PushBatchBytes: 10, RPCTimeout: time.Hour}, a)
	devices := []string{"d0", "d1"}
	const n = 10
	queueBehindBlockedCall(t, e, a, devices, n)
	close(a.block)
	checkOrder(t, a, devices, n)
	if sizes := a.batchSizes(); len(sizes) == 0 || slices.Max(sizes) > 3 {
		t.Fatalf("PushMsgs batch sizes %v, want at most 3 pushes (10 bytes)", sizes)
	}
}

// An older comet without PushMsgs gets the batched pushes one by one.
func TestPushBatchFallsBackToPushMsg(t *testing.T) {
	a := startFakeComet(t, "a")
	a.block, a.noBatch = make(chan struct{}), true
	e := newTestEnv(t, Config{Workers: 1, RPCTimeout: time.Hour}, a)
	devices := []string{"d0", "d1", "d2"}
	const n = 20
	queueBehindBlockedCall(t, e, a, devices, n)
	close(a.block)
	checkOrder(t, a, devices, n)
	if got := e.job.droppedCount(ReasonRejected); got != 0 {
		t.Fatalf("%v pushes rejected", got)
	}
}

// A batch whose call fails with a transient error is sent again, whole.
func TestPushBatchRetried(t *testing.T) {
	a := startFakeComet(t, "a")
	a.block = make(chan struct{})
	e := newTestEnv(t, Config{Workers: 1, RetryBackoff: 5 * time.Millisecond, RPCTimeout: time.Hour}, a)
	devices := []string{"d0"}
	const n = 10
	queueBehindBlockedCall(t, e, a, devices, n)
	a.mu.Lock()
	a.failFirst = a.calls + 2 // the batch's first two calls fail
	a.mu.Unlock()
	close(a.block)
	checkOrder(t, a, devices, n)
	if sizes := a.batchSizes(); !slices.Equal(sizes, []int{n}) {
		t.Fatalf("batches %v, want one of %d", sizes, n)
	}
	if got := counterValue(e.job.metrics.rpcErrors.WithLabelValues(methodPushMsgs)); got != 2 {
		t.Fatalf("PushMsgs errors = %v, want 2", got)
	}
}

// LocalDial calls the named comet's server in-process and dials others.
func TestLocalDial(t *testing.T) {
	local := &fakeComet{id: "local"}
	errRemote := errors.New("remote dial")
	var dialled []string
	dial := LocalDial("local", local, func(ins discovery.Instance) (comet.CometClient, io.Closer, error) {
		dialled = append(dialled, ins.ID)
		return nil, nil, errRemote
	})
	if _, _, err := dial(discovery.Instance{ID: "remote"}); !errors.Is(err, errRemote) || !slices.Equal(dialled, []string{"remote"}) {
		t.Fatalf("dial remote: err %v, dialled %v", err, dialled)
	}

	j, err := New(Config{Workers: 2}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Dial: dial,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.apply([]discovery.Instance{{ID: "local", Addrs: map[string]string{discovery.AddrGRPC: "in-process"}}})
	ctx := context.Background()
	const n = 50
	for i := range n {
		if err := j.Dispatch(ctx, &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "local",
			Keys: []string{"k" + strconv.Itoa(i%5)}, Msg: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Dispatch(ctx, &logic.PushMsg{Type: logic.PushMsg_BROADCAST, Operation: testOp, Msg: []byte("all")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return len(local.pushedKeys()) == n }, "got %d pushes in-process", len(local.pushedKeys()))
	eventually(t, func() bool { _, _, b := local.snapshot(); return len(b) == 1 }, "broadcast not delivered in-process")
	cli := LocalClient(local)
	if _, err := cli.Rooms(ctx, &comet.RoomsReq{}); err == nil {
		t.Fatal("Rooms of the fake (unimplemented) succeeded")
	}
}
