package comet

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/protocol"
)

// deepOp is a deep call a reader hands to a deep-stack worker.
type deepOp uint8

const (
	// deepReceive: c.receive(f) (logic Receive, gRPC).
	deepReceive deepOp = iota
	// deepHeartbeat: c.logicHeartbeat() (logic Heartbeat, gRPC).
	deepHeartbeat
	// deepReadWS: c.readAndHandle(true) (gorilla's frame reader, then the
	// frame's handling, logic calls included, on the same stack).
	deepReadWS
)

// deepWorker is a long-lived goroutine that runs deep calls for readers, so
// that a reader's own stack stays at 2 KB and the deep call finds a stack
// already grown (no runtime.newstack/copystack per call). The call's
// arguments and result live in the worker: handing a call over allocates
// nothing.
type deepWorker struct {
	wake chan struct{} // capacity 1: a call is set; closed: exit
	done chan struct{} // capacity 1: the call has returned

	// The call: written by the caller before wake, read back by the caller
	// after done (the channel operations order the accesses).
	c  *conn
	op deepOp
	f  protocol.Frame
	ok bool
}

// deepPool holds the idle deep-stack workers. Workers are started on
// demand, up to max, and stop when the pool closes (Shutdown). A caller
// never waits for a worker: when none is idle and the pool is full (or not
// running), the call runs on a fresh goroutine as before the pool existed.
//
// Stacks of idle workers are not pinned: the garbage collector halves a
// parked goroutine's stack while it uses under a quarter of it, so a worker
// idle through a few GC cycles is back to ~4 KB and regrows on its next
// deep call (once per GC cycle at most, instead of on every call).
type deepPool struct {
	max       int
	exec      func(c *conn, op deepOp, f protocol.Frame) bool // (*conn).runDeep
	wg        *sync.WaitGroup                                 // the server's
	workers   prometheus.Gauge
	fallbacks prometheus.Counter

	mu      sync.Mutex
	idle    []*deepWorker // LIFO: the most recently used stack is reused first
	started int           // workers running
	open    bool          // between start and close
}

// newDeepPool returns a pool of at most max workers running exec (the
// server's: (*conn).runDeep), tracked by wg.
func newDeepPool(max int, exec func(*conn, deepOp, protocol.Frame) bool, wg *sync.WaitGroup, m *metrics) *deepPool {
	return &deepPool{max: max, exec: exec, wg: wg, workers: m.deepWorkers, fallbacks: m.deepFallbacks}
}

// start lets the pool start workers (Server.Start).
func (p *deepPool) start() {
	p.mu.Lock()
	p.open = true
	p.mu.Unlock()
}

// close stops the idle workers now and every busy one when its call
// returns; later calls run on fresh goroutines.
func (p *deepPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = false
	for i, w := range p.idle {
		close(w.wake)
		p.idle[i] = nil
	}
	p.idle = p.idle[:0]
}

// get returns an idle worker, a new one if the pool may grow, or nil.
func (p *deepPool) get() *deepWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		return w
	}
	if !p.open || p.started >= p.max {
		return nil
	}
	p.started++
	p.workers.Inc()
	w := &deepWorker{wake: make(chan struct{}, 1), done: make(chan struct{}, 1)}
	// The caller holds the server's WaitGroup (it is a reader or a
	// handshake), so Add cannot race with Shutdown's Wait reaching zero.
	p.wg.Add(1)
	go p.work(w)
	return w
}

// running returns the number of workers running.
func (p *deepPool) running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// put makes w idle again, or stops it when the pool has closed.
func (p *deepPool) put(w *deepWorker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		close(w.wake)
		return
	}
	p.idle = append(p.idle, w)
}

func (p *deepPool) work(w *deepWorker) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		p.started--
		p.mu.Unlock()
		p.workers.Dec()
	}()
	for range w.wake {
		w.ok = p.exec(w.c, w.op, w.f)
		w.done <- struct{}{}
	}
}

// run runs op for c on a deep-stack worker and waits for it; with no
// worker available it runs it on a fresh goroutine. It reports the op's
// result (deepReadWS: whether the connection is still open).
func (p *deepPool) run(c *conn, op deepOp, f protocol.Frame) bool {
	w := p.get()
	if w == nil {
		p.fallbacks.Inc()
		return p.runFresh(c, op, f)
	}
	w.c, w.op, w.f = c, op, f
	w.wake <- struct{}{}
	<-w.done
	ok := w.ok
	w.c, w.f = nil, protocol.Frame{} // keep no reference to c or the body
	p.put(w)
	return ok
}

// runFresh runs op on a short-lived goroutine and waits for it (the
// fallback: its stack grows during the call and is freed with it).
func (p *deepPool) runFresh(c *conn, op deepOp, f protocol.Frame) bool {
	done := make(chan bool, 1)
	go func() { done <- p.exec(c, op, f) }()
	return <-done
}

// runDeep runs op on the current (deep) stack.
func (c *conn) runDeep(op deepOp, f protocol.Frame) bool {
	switch op {
	case deepReceive:
		c.receive(f)
	case deepHeartbeat:
		c.logicHeartbeat()
	case deepReadWS:
		return c.readAndHandle(true)
	}
	return true
}
