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
// enough and costs one stream setup per slot per minute. It is also how
// long the mux stays on unary calls after a logic without ReceiveStream
// answered (an older release during a rolling upgrade) before it tries
// streams again.
const receiveStreamMaxAge = time.Minute

// receiveAttempts bounds the streams a call tries when it could not be
// sent (its stream had just ended) or a stopping logic refused it: the
// first retry may land on a stream the stopping logic opened before its
// listener closed.
const receiveAttempts = 3

// Errors of the multiplexed calls; all carry a gRPC status.
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
// holds one stream at a time and replaces it when it ends or ages.
type receiveMux struct {
	client logic.LogicClient
	log    *slog.Logger
	open   prometheus.Gauge // streams open
	maxAge atomic.Int64     // ns: receiveStreamMaxAge; tests shorten it
	// observe records a multiplexed call like a unary one; may be nil.
	observe func(fullMethod string, start time.Time, err error)

	unary         bool         // configured: unary calls only
	fallbackUntil atomic.Int64 // unix ns: unary calls until then (logic had no ReceiveStream)
	next          atomic.Uint32
	slots         []muxSlot
	chans         sync.Pool // chan muxReply, capacity 1, empty

	ctx    context.Context // the streams' parent
	cancel context.CancelFunc
	wg     sync.WaitGroup // the streams' reply readers
	mu     sync.Mutex     // guards closed against wg.Add
	closed bool
}

// muxSlot holds the stream its calls use.
type muxSlot struct {
	mu      sync.Mutex
	cur     *muxStream
	opening chan struct{} // closed when the stream being opened is in cur (or failed)
}

// muxStream is one ReceiveStream and its calls awaiting a reply.
type muxStream struct {
	stream logic.Logic_ReceiveStreamClient
	cancel context.CancelFunc
	born   time.Time
	// sendSem (capacity 1) serializes Send and CloseSend, which are not
	// safe for concurrent use; a caller waits for it with its deadline.
	sendSem chan struct{}

	mu      sync.Mutex // pending, nextID, ended, retired, closers.Add
	pending map[uint64]chan muxReply
	nextID  uint64
	ended   bool // takes no new calls (retiring, or sending or reading failed)
	retired bool // retire ran, or the stream failed (nothing to close)
	// closers is the goroutine closing the sending side (retire); the
	// reader waits for it before it ends.
	closers sync.WaitGroup
}

type muxReply struct {
	r   *logic.ReceiveReply
	err error
}

// newReceiveMux returns a mux of streams streams to client's logic (< 1:
// unary Receive per call). It starts nothing: streams open on first use.
func newReceiveMux(client logic.LogicClient, streams int, log *slog.Logger, open prometheus.Gauge) *receiveMux {
	ctx, cancel := context.WithCancel(context.Background())
	m := &receiveMux{client: client, log: log, open: open, ctx: ctx, cancel: cancel}
	m.maxAge.Store(int64(receiveStreamMaxAge))
	if streams < 1 {
		m.unary = true
	} else {
		m.slots = make([]muxSlot, streams)
	}
	m.chans.New = func() any { return make(chan muxReply, 1) }
	return m
}

// useUnary reports whether calls go unary now.
func (m *receiveMux) useUnary() bool {
	return m.unary || time.Now().UnixNano() < m.fallbackUntil.Load()
}

// Receive is logic's Receive, multiplexed; it returns what a unary call
// would (a gRPC status error on failure).
func (m *receiveMux) Receive(ctx context.Context, req *logic.ReceiveReq) (r *logic.ReceiveReply, err error) {
	if m.useUnary() {
		return m.client.Receive(ctx, req)
	}
	unary := false // fell back: the client interceptor observes the unary call
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
		if m.useUnary() {
			err = errStreamFallback
			break
		}
		var st *muxStream
		if st, err = slot.stream(ctx, m); err != nil {
			return nil, err
		}
		var sent bool
		r, sent, err = st.call(ctx, req, m)
		if err == nil || sent || errors.Is(err, errStreamFallback) {
			break
		}
	}
	req.CallId, req.TimeoutMs = 0, 0
	if errors.Is(err, errStreamFallback) {
		unary = true
		return m.client.Receive(ctx, req)
	}
	return r, err
}

// stream returns the slot's stream, opening one when there is none or the
// current one ended or aged. One caller opens it; the others wait for it
// with their own deadlines.
func (sl *muxSlot) stream(ctx context.Context, m *receiveMux) (*muxStream, error) {
	for {
		sl.mu.Lock()
		c := sl.cur
		if c != nil && time.Since(c.born) < time.Duration(m.maxAge.Load()) && c.live() {
			sl.mu.Unlock()
			return c, nil
		}
		if wait := sl.opening; wait != nil {
			sl.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		opening := make(chan struct{})
		sl.cur, sl.opening = nil, opening
		sl.mu.Unlock()
		if c != nil {
			c.retire()
		}
		c, err := m.openStream(ctx)
		if err == nil && m.isClosed() {
			c.retire() // close passed this slot while it was opening
		}
		sl.mu.Lock()
		sl.cur, sl.opening = c, nil
		sl.mu.Unlock()
		close(opening)
		return c, err
	}
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
	c := &muxStream{
		stream: s, cancel: cancel, born: time.Now(), sendSem: make(chan struct{}, 1),
		pending: make(map[uint64]chan muxReply),
	}
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

// retire makes c take no new calls and closes its sending side in the
// background, once the Send in progress, if any, is done (it ends at its
// caller's deadline or when the stream is cancelled): logic then answers
// the calls in flight and ends the stream. The caller never waits.
func (c *muxStream) retire() {
	c.mu.Lock()
	c.ended = true
	if c.retired {
		c.mu.Unlock()
		return
	}
	c.retired = true
	c.closers.Add(1) // under mu: before fail marks c retired and the reader waits
	c.mu.Unlock()
	go func() {
		defer c.closers.Done()
		c.sendSem <- struct{}{}
		_ = c.stream.CloseSend()
		<-c.sendSem
	}()
}

// isClosed reports whether close has begun.
func (m *receiveMux) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// call sends req on c and waits for its reply or ctx. sent reports whether
// logic may have handled req (false: the stream had ended, or logic
// refused it; the call can go on another stream).
func (c *muxStream) call(ctx context.Context, req *logic.ReceiveReq, m *receiveMux) (r *logic.ReceiveReply, sent bool, err error) {
	select {
	case c.sendSem <- struct{}{}:
	case <-ctx.Done():
		return nil, true, status.FromContextError(ctx.Err()).Err()
	}
	if err := ctx.Err(); err != nil { // both were ready: do not send
		<-c.sendSem
		return nil, true, status.FromContextError(err).Err()
	}
	req.TimeoutMs = 0
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
	}
	ch := m.chans.Get().(chan muxReply)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		<-c.sendSem
		m.chans.Put(ch)
		return nil, false, errStreamEnded
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	req.CallId = id
	// Send waits for HTTP/2 flow control when logic stopped reading; the
	// caller's deadline ending first breaks the stream (and fails its
	// other calls: a stream logic does not read is of no use).
	var sending atomic.Bool
	sending.Store(true)
	stop := context.AfterFunc(ctx, func() {
		if sending.Load() {
			c.cancel()
		}
	})
	err = c.stream.Send(req)
	sending.Store(false)
	stop()
	<-c.sendSem
	if err != nil {
		c.mu.Lock()
		c.ended = true
		_, mine := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if mine {
			m.chans.Put(ch)
		} // else the reader failed it already: ch holds that reply, dropped
		if ctx.Err() != nil {
			return nil, true, status.FromContextError(ctx.Err()).Err()
		}
		return nil, false, errStreamEnded
	}

	select {
	case rep := <-ch:
		m.chans.Put(ch)
		if rep.err == errStreamRefused {
			c.retire() // logic is stopping: no more calls here
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
// fails the calls still waiting. A refused reply with call id 0 is logic
// asking to close the sending side (it is stopping).
func (c *muxStream) readReplies(m *receiveMux) {
	defer m.wg.Done()
	defer m.open.Dec()
	defer c.closers.Wait() // after cancel: a Send in progress fails
	defer c.cancel()
	for {
		r, err := c.stream.Recv()
		if err != nil {
			c.fail(m, err)
			return
		}
		if r.GetCallId() == 0 {
			// retire closes in the background: a Send in progress may
			// wait for logic to read, and logic for its replies to be read.
			if r.GetRefused() {
				c.retire()
			}
			continue
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
	c.retired = true // nothing to close: no closer starts after this
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	callErr := errStreamEnded
	if status.Code(err) == codes.Unimplemented {
		if time.Now().UnixNano() >= m.fallbackUntil.Load() {
			m.log.Info("logic has no ReceiveStream: one unary Receive per client frame for a while", "for", time.Duration(m.maxAge.Load()))
		}
		m.fallbackUntil.Store(time.Now().Add(time.Duration(m.maxAge.Load())).UnixNano())
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
		c := sl.cur
		sl.mu.Unlock()
		if c != nil {
			c.retire()
		}
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
