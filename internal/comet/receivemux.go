package comet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hubuim/hubuim/api/logic"
)

// receiveStreamMaxAge bounds a ReceiveStream's life: an older stream takes
// no new calls (it still answers those in flight) and its slot opens a
// fresh one, which the round-robin balancer may place on a logic replica
// that joined since. A minute spreads the streams over new replicas soon
// enough and costs one stream setup per slot per minute.
const receiveStreamMaxAge = time.Minute

// receiveAttempts: a call that could not be sent because its stream had
// just ended, or that a stopping logic refused, is tried once more on the
// slot's next stream.
const receiveAttempts = 2

// Errors of the multiplexed calls; both carry a gRPC status.
var (
	// errStreamEnded: the call's stream ended before the call was sent
	// (retried) or before it was answered (failed: logic may or may not
	// have handled it, as with a unary call on a broken connection).
	errStreamEnded = status.Error(codes.Unavailable, "receive stream ended")
	// errStreamFallback: logic has no ReceiveStream; the call was not
	// handled and goes unary.
	errStreamFallback = status.Error(codes.Unimplemented, "logic has no ReceiveStream")
	// errStreamRefused: logic is stopping and refused the call without
	// handling it; the call goes on another stream.
	errStreamRefused = status.Error(codes.Unavailable, "logic is stopping")
)

// receiveMux sends the comet's Receive calls (the client frames logic
// handles) over a few long-lived ReceiveStreams instead of one unary call
// each: no stream setup, HPACK headers or interceptors per frame, on the
// comet and on logic. Calls go round robin over the slots; each slot
// holds one stream at a time and replaces it when it ends or ages. A logic
// that does not implement ReceiveStream (an older release during a rolling
// upgrade) switches the mux to unary Receive for good.
type receiveMux struct {
	client logic.LogicClient
	log    *slog.Logger
	open   prometheus.Gauge // streams open
	maxAge time.Duration    // receiveStreamMaxAge; tests shorten it
	// observe records a multiplexed call like a unary one; may be nil.
	observe func(fullMethod string, start time.Time, err error)

	unary atomic.Bool // unary Receive per call (configured, or logic has no stream)
	next  atomic.Uint32
	slots []muxSlot
	chans sync.Pool // chan muxReply, capacity 1, empty

	ctx    context.Context // the streams' parent
	cancel context.CancelFunc
	wg     sync.WaitGroup // the streams' reply readers
	mu     sync.Mutex     // guards closed against wg.Add
	closed bool
}

// muxSlot holds the stream its calls use.
type muxSlot struct {
	mu  sync.Mutex
	cur *muxStream
}

// muxStream is one ReceiveStream and its calls awaiting a reply.
type muxStream struct {
	stream logic.Logic_ReceiveStreamClient
	cancel context.CancelFunc
	born   time.Time

	mu      sync.Mutex // Send, CloseSend, pending, ended
	pending map[uint64]chan muxReply
	nextID  uint64
	ended   bool // takes no new calls (retired, or sending or reading failed)
}

type muxReply struct {
	r   *logic.ReceiveReply
	err error
}

// newReceiveMux returns a mux of streams streams to client's logic (< 1:
// unary Receive per call). It starts nothing: streams open on first use.
func newReceiveMux(client logic.LogicClient, streams int, log *slog.Logger, open prometheus.Gauge) *receiveMux {
	ctx, cancel := context.WithCancel(context.Background())
	m := &receiveMux{client: client, log: log, open: open, maxAge: receiveStreamMaxAge, ctx: ctx, cancel: cancel}
	if streams < 1 {
		m.unary.Store(true)
	} else {
		m.slots = make([]muxSlot, streams)
	}
	m.chans.New = func() any { return make(chan muxReply, 1) }
	return m
}

// Receive is logic's Receive, multiplexed; it returns what a unary call
// would (a gRPC status error on failure).
func (m *receiveMux) Receive(ctx context.Context, req *logic.ReceiveReq) (r *logic.ReceiveReply, err error) {
	if m.unary.Load() {
		return m.client.Receive(ctx, req)
	}
	unary := false // fell back: the interceptor observes the unary call
	if m.observe != nil {
		start := time.Now()
		defer func() {
			if !unary {
				m.observe(logic.Logic_Receive_FullMethodName, start, err)
			}
		}()
	}
	slot := &m.slots[m.next.Add(1)%uint32(len(m.slots))]
	for range receiveAttempts {
		var st *muxStream
		if st, err = slot.stream(ctx, m); err != nil {
			return nil, err
		}
		var sent bool
		r, sent, err = st.call(ctx, req, m)
		switch {
		case errors.Is(err, errStreamFallback):
			unary = true
			return m.client.Receive(ctx, req)
		case err != nil && !sent:
			continue
		}
		return r, err
	}
	return nil, err
}

// stream returns the slot's stream, opening one when there is none or the
// current one ended or aged.
func (sl *muxSlot) stream(ctx context.Context, m *receiveMux) (*muxStream, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if c := sl.cur; c != nil {
		if time.Since(c.born) < m.maxAge && c.live() {
			return c, nil
		}
		c.retire()
		sl.cur = nil
	}
	c, err := m.openStream(ctx)
	if err != nil {
		return nil, err
	}
	sl.cur = c
	return c, nil
}

// openStream opens a stream that lives until the mux closes; ctx, the
// first call's, bounds only the wait for a connection to logic.
func (m *receiveMux) openStream(ctx context.Context) (*muxStream, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errStreamEnded
	}
	m.wg.Add(1)
	m.mu.Unlock()
	sctx, cancel := context.WithCancel(m.ctx)
	stop := context.AfterFunc(ctx, cancel)
	s, err := m.client.ReceiveStream(sctx)
	if !stop() && err == nil { // ctx ended first: the stream is cancelled
		err = status.FromContextError(ctx.Err()).Err()
	}
	if err != nil {
		cancel()
		m.wg.Done()
		return nil, err
	}
	c := &muxStream{stream: s, cancel: cancel, born: time.Now(), pending: make(map[uint64]chan muxReply)}
	m.open.Inc()
	go c.readReplies(m)
	return c, nil
}

// live reports whether c takes new calls.
func (c *muxStream) live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.ended
}

// retire takes no new calls on c and closes its sending side: logic
// answers the calls in flight, then ends the stream.
func (c *muxStream) retire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.ended = true
		_ = c.stream.CloseSend()
	}
}

// call sends req on c and waits for its reply or ctx. sent reports whether
// logic may have handled req (false: the stream had ended, or logic
// refused it; the call can go on another stream).
func (c *muxStream) call(ctx context.Context, req *logic.ReceiveReq, m *receiveMux) (r *logic.ReceiveReply, sent bool, err error) {
	var timeout int64
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl).Milliseconds(), 1)
	}
	ch := m.chans.Get().(chan muxReply)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		m.chans.Put(ch)
		return nil, false, errStreamEnded
	}
	c.nextID++
	id := c.nextID
	req.CallId, req.TimeoutMs = id, timeout
	if err := c.stream.Send(req); err != nil {
		// The stream is broken; its reader fails the calls in flight.
		c.ended = true
		c.mu.Unlock()
		m.chans.Put(ch)
		return nil, false, errStreamEnded
	}
	c.pending[id] = ch
	c.mu.Unlock()

	select {
	case rep := <-ch:
		m.chans.Put(ch)
		if rep.err == errStreamRefused {
			c.retire() // logic ends it: no more calls here
			return nil, false, rep.err
		}
		return rep.r, true, rep.err
	case <-ctx.Done():
		c.mu.Lock()
		_, waiting := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !waiting {
			<-ch // the reply is being handed over: take it so ch can be reused
			m.chans.Put(ch)
		}
		return nil, true, status.FromContextError(ctx.Err()).Err()
	}
}

// readReplies hands each reply to its call until the stream ends, then
// fails the calls still waiting.
func (c *muxStream) readReplies(m *receiveMux) {
	defer m.wg.Done()
	defer m.open.Dec()
	defer c.cancel()
	for {
		r, err := c.stream.Recv()
		if err != nil {
			c.fail(m, err)
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[r.GetCallId()]
		delete(c.pending, r.GetCallId())
		c.mu.Unlock()
		if !ok {
			continue // the caller gave up (its ctx ended)
		}
		var rerr error
		switch {
		case r.GetRefused():
			rerr = errStreamRefused
		case r.GetCode() != uint32(codes.OK):
			rerr = status.Error(codes.Code(r.GetCode()), r.GetMessage())
		}
		ch <- muxReply{r: r, err: rerr}
	}
}

// fail ends c after its read error err and fails its waiting calls.
func (c *muxStream) fail(m *receiveMux, err error) {
	c.mu.Lock()
	c.ended = true
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	callErr := errStreamEnded
	if status.Code(err) == codes.Unimplemented {
		if !m.unary.Swap(true) {
			m.log.Info("logic has no ReceiveStream: one unary Receive per client frame")
		}
		callErr = errStreamFallback
	} else if len(pending) > 0 {
		m.log.Warn("receive stream ended with calls in flight", "calls", len(pending), "err", err)
	}
	for _, ch := range pending {
		ch <- muxReply{err: callErr}
	}
}

// close retires every stream (logic answers their calls in flight, then
// ends them) and waits for them to end until ctx is done, then cancels
// the rest. Later calls fail.
func (m *receiveMux) close(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	for i := range m.slots {
		sl := &m.slots[i]
		sl.mu.Lock()
		if sl.cur != nil {
			sl.cur.retire()
		}
		sl.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	m.cancel()
	<-done
}
