package comet

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/hubuim/hubuim/api/protocol"
)

// newReceiveBenchServer is a server without listeners whose logic is a
// fake served over loopback gRPC, with its deep-stack workers running
// (stopped at cleanup) and the fake logic's gRPC server with stream
// workers, unless fresh (every call, on both sides, on a short-lived
// goroutine, as before). streams is Config.LogicStreams (< 0: a unary
// Receive per frame).
func newReceiveBenchServer(tb testing.TB, fresh bool, streams int) *Server {
	tb.Helper()
	var opts []grpc.ServerOption
	if !fresh {
		opts = append(opts, grpc.NumStreamWorkers(grpcStreamWorkers))
	}
	lc := startLogic(tb, &streamLogic{fakeLogic: fakeLogic{onlineMul: 1}}, opts...)
	s, err := New(Config{ID: "bench", LogicStreams: streams}, Deps{Logic: lc, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	if !fresh {
		s.deep.start()
	}
	tb.Cleanup(func() {
		s.deep.close()
		s.wg.Wait()
		s.recv.close(context.Background())
	})
	return s
}

// deepDepth recurses with a 512-byte frame per level: a stand-in for a
// gRPC call's stack depth.
//
//go:noinline
func deepDepth(n int) byte {
	var pad [512]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return deepDepth(n-1) + pad[n%len(pad)]
}

// deepLevels × 512 B ≈ 16 KB of stack.
const deepLevels = 32

// BenchmarkDeepCall is the cost of handing one deep call (16 KB of stack)
// off the caller's stack: pool = an idle deep-stack worker, fresh = a
// short-lived goroutine (the fallback, and what readers did before).
func BenchmarkDeepCall(b *testing.B) {
	for _, pooled := range []bool{true, false} {
		name := map[bool]string{true: "pool", false: "fresh"}[pooled]
		b.Run(name, func(b *testing.B) {
			p := newTestDeepPool(b, DefaultDeepWorkers, func() { deepDepth(deepLevels) })
			if !pooled {
				p.close()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.run(nil, deepTestOp, protocol.Frame{})
			}
		})
	}
}

// testDeepPool is a started deep-stack pool whose ops are deepTestOp (runs
// fn) and deepNestedTestOp (makes a deepTestOp call from the worker).
type testDeepPool struct {
	*deepPool
	m  *metrics
	wg sync.WaitGroup
}

const (
	deepTestOp deepOp = iota
	deepNestedTestOp
)

func newTestDeepPool(tb testing.TB, max int, fn func()) *testDeepPool {
	tb.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		tb.Fatal(err)
	}
	t := &testDeepPool{m: m}
	exec := func(c *conn, op deepOp, f protocol.Frame) bool {
		if op == deepNestedTestOp {
			return t.run(c, deepTestOp, f)
		}
		if fn != nil {
			fn()
		}
		return true
	}
	t.deepPool = newDeepPool(max, exec, &t.wg, m)
	t.start()
	tb.Cleanup(t.stop)
	return t
}

// stop closes the pool and waits for its workers.
func (t *testDeepPool) stop() {
	t.close()
	t.wg.Wait()
}

func TestDeepPoolReusesWorkers(t *testing.T) {
	p := newTestDeepPool(t, 2, func() { deepDepth(deepLevels) })
	for range 100 {
		if !p.run(nil, deepTestOp, protocol.Frame{}) {
			t.Fatal("run reported false")
		}
	}
	if got := p.running(); got != 1 {
		t.Fatalf("%d workers after serial calls, want 1", got)
	}
	// A worker's call making a deep call gets a second worker.
	if !p.run(nil, deepNestedTestOp, protocol.Frame{}) {
		t.Fatal("nested run reported false")
	}
	if got := p.running(); got != 2 {
		t.Fatalf("%d workers after a nested call, want 2", got)
	}
	if got := counterValue(t, p.m.deepFallbacks); got != 0 {
		t.Fatalf("%v fallbacks", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { p.run(nil, deepTestOp, protocol.Frame{}) }); allocs != 0 {
		t.Fatalf("%v allocs per call, want 0", allocs)
	}
	p.stop()
	if got := p.running(); got != 0 {
		t.Fatalf("%d workers after close", got)
	}
	// Closed: calls still run, on fresh goroutines.
	if !p.run(nil, deepTestOp, protocol.Frame{}) {
		t.Fatal("run after close reported false")
	}
	if got := counterValue(t, p.m.deepFallbacks); got != 1 {
		t.Fatalf("%v fallbacks after close, want 1", got)
	}
}

// TestDeepPoolFullFallsBack: with every worker busy a call never waits for
// one, and nested calls (a worker's call making another) cannot deadlock.
func TestDeepPoolFullFallsBack(t *testing.T) {
	const workers = 2
	release := make(chan struct{})
	var blocked sync.WaitGroup
	blocked.Add(workers)
	var hold atomic.Bool
	hold.Store(true)
	p := newTestDeepPool(t, workers, func() {
		if hold.Load() {
			blocked.Done()
			<-release
		}
	})
	var c *conn
	var busy sync.WaitGroup
	for range workers {
		busy.Go(func() { p.run(c, deepTestOp, protocol.Frame{}) })
	}
	blocked.Wait() // both workers are inside a call
	hold.Store(false)

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(c, deepTestOp, protocol.Frame{}) // no idle worker: fresh goroutine
		// A call made from a worker while the pool is full.
		p.run(c, deepNestedTestOp, protocol.Frame{})
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("a call waited for a busy worker")
	}
	if got := counterValue(t, p.m.deepFallbacks); got < 2 {
		t.Fatalf("%v fallbacks, want at least 2", got)
	}
	if got := p.running(); got != workers {
		t.Fatalf("%d workers, want the bound %d", got, workers)
	}
	close(release)
	busy.Wait()

	base := runtime.NumGoroutine()
	p.stop()
	eventually(t, "workers gone", func() bool { return runtime.NumGoroutine() <= base-workers })
}

// TestReadersUseDeepWorkers: the readers' logic calls (Receive, logic
// Heartbeat) and WebSocket frame reads run on deep-stack workers, one at a
// time here: one worker serves them all, or two (the client may send its
// next frame once the reply is queued, before the worker is idle again);
// Shutdown stops the workers.
func TestReadersUseDeepWorkers(t *testing.T) {
	e := startServer(t, func(c *Config) { c.LogicHeartbeat = time.Nanosecond })
	for _, c := range []*client{e.tcpClient(t, "t", ""), e.wsClient(t, "w", "")} {
		for seq := int32(1); seq <= 3; seq++ {
			c.send(protocol.OpSendMsg, seq, []byte("hi"))
			if f := c.expect(protocol.OpSendMsgReply); f.Seq != seq || string(f.Body) != "echo:hi" {
				t.Fatalf("reply %+v", f)
			}
			c.send(protocol.OpHeartbeat, seq, nil)
			c.expect(protocol.OpHeartbeatReply)
		}
	}
	eventually(t, "logic heartbeats", func() bool {
		e.logic.mu.Lock()
		defer e.logic.mu.Unlock()
		return e.logic.heartbeats >= 6
	})
	if got := e.s.deep.running(); got < 1 || got > 2 {
		t.Fatalf("%d deep workers, want 1 or 2 (calls one at a time)", got)
	}
	if got := counterValue(t, e.s.m.deepFallbacks); got != 0 {
		t.Fatalf("%v fallbacks", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := e.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.s.deep.running(); got != 0 {
		t.Fatalf("%d deep workers after Shutdown", got)
	}
}
