package job

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/discovery"
)

// DialFunc opens a client to one comet. The Closer is closed when the
// comet leaves discovery or the job closes.
type DialFunc func(ins discovery.Instance) (comet.CometClient, io.Closer, error)

// Reconnect backoff of DialGRPC's connections. gRPC's own default grows to
// 120s, which would leave a restarted comet without pushes for minutes.
const (
	grpcReconnectBase = 100 * time.Millisecond
	grpcReconnectMax  = 5 * time.Second
	grpcReconnectMult = 1.6
	grpcReconnectJit  = 0.2
	grpcMinConnect    = 2 * time.Second
)

// DialGRPC is the default DialFunc: a plaintext gRPC connection to the
// comet's AddrGRPC address. Connecting is lazy; calls retry with backoff.
func DialGRPC(ins discovery.Instance) (comet.CometClient, io.Closer, error) {
	addr := ins.Addrs[discovery.AddrGRPC]
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: grpcReconnectBase, Multiplier: grpcReconnectMult,
				Jitter: grpcReconnectJit, MaxDelay: grpcReconnectMax,
			},
			MinConnectTimeout: grpcMinConnect,
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("job: dial comet %s at %q: %w", ins.ID, addr, err)
	}
	return comet.NewCometClient(conn), conn, nil
}

// task is one call for a comet worker. proto is shared between comets and
// never modified after it is queued.
type task struct {
	kind  string // kindPush, kindRoom, kindBroadcast, kindPushBatch
	keys  []string
	room  string
	op    int32
	speed int32
	proto *protocol.Proto
	batch *comet.PushMsgsReq // kindPushBatch: the worker's reused request
}

// kindPushBatch is a task a worker builds from queued pushes; it is never
// queued itself.
const kindPushBatch = "push_batch"

// size is what a push adds to a PushMsgs batch (bodies and keys).
func (t *task) size() int {
	n := len(t.proto.GetBody())
	for _, k := range t.keys {
		n += len(k)
	}
	return n
}

// count is the number of pushes t stands for (drops count them all).
func (t *task) count() int {
	if t.kind == kindPushBatch {
		return len(t.batch.Pushes)
	}
	return 1
}

// worker is one queue of a comet client and the goroutine draining it.
type worker struct {
	ch        chan task
	congested atomic.Bool // an enqueue timed out; don't wait until half drained

	// Owned by the worker goroutine, reused between batches.
	batch []task
	reqs  []*comet.PushMsgReq
	req   comet.PushMsgsReq
}

// cometClient pushes to one comet through its workers. Lock order:
// cometClient.mu is taken alone (never with Job locks held across it).
type cometClient struct {
	id      string
	addr    string
	cli     comet.CometClient
	closer  io.Closer
	cfg     *Config
	log     *slog.Logger // with the comet id
	jobLog  *slog.Logger // for drop lines, which name the comet themselves
	metrics *metrics
	workers []*worker

	ctx        context.Context // cancelled: calls stop, pending pushes are dropped
	cancel     context.CancelFunc
	dropReason atomic.Value // string; set before ctx is cancelled or sealed is closed
	noBatch    atomic.Bool  // the comet answered PushMsgs with Unimplemented

	mu     sync.RWMutex // held (read) by enqueuers, (write) to set closed
	closed bool
	sealed chan struct{} // closed once closed is set: no more enqueues
	wg     sync.WaitGroup
	once   sync.Once
}

func newCometClient(ins discovery.Instance, cli comet.CometClient, closer io.Closer, cfg *Config, log *slog.Logger, m *metrics) *cometClient {
	ctx, cancel := context.WithCancel(context.Background())
	c := &cometClient{
		id: ins.ID, addr: ins.Addrs[discovery.AddrGRPC], cli: cli, closer: closer, cfg: cfg,
		log: log.With("comet", ins.ID), jobLog: log, metrics: m, ctx: ctx, cancel: cancel,
		workers: make([]*worker, cfg.Workers), sealed: make(chan struct{}),
	}
	c.dropReason.Store(ReasonCometRemoved)
	for i := range c.workers {
		w := &worker{ch: make(chan task, cfg.QueueSize)}
		c.workers[i] = w
		c.wg.Go(func() { c.run(w) })
	}
	return c
}

// workerFor picks the worker of a device key or room (FNV-1a, no
// allocation), so one key's pushes stay in order.
func (c *cometClient) workerFor(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(len(c.workers)))
}

// enqueue hands t to worker w. It returns an error only when ctx ended
// before t was queued (the record should be delivered again); a push that
// cannot be queued for other reasons is dropped with a metric.
func (c *cometClient) enqueue(ctx context.Context, w int, t task) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		c.metrics.drop(c.jobLog, c.dropReason.Load().(string), c.id, 1)
		return nil
	}
	q := c.workers[w]
	select {
	case q.ch <- t:
		return nil
	default:
	}
	if q.congested.Load() {
		c.metrics.drop(c.jobLog, ReasonQueueFull, c.id, 1)
		return nil
	}
	timer := time.NewTimer(c.cfg.EnqueueTimeout)
	defer timer.Stop()
	select {
	case q.ch <- t:
		return nil
	case <-timer.C:
		q.congested.Store(true)
		c.metrics.drop(c.jobLog, ReasonQueueFull, c.id, 1)
		return nil
	case <-c.ctx.Done():
		c.metrics.drop(c.jobLog, c.dropReason.Load().(string), c.id, 1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *cometClient) depth() int {
	n := 0
	for _, w := range c.workers {
		n += len(w.ch)
	}
	return n
}

func (c *cometClient) run(w *worker) {
	for {
		select {
		case t := <-w.ch:
			c.process(w, t)
		case <-c.sealed:
			c.drain(w)
			return
		case <-c.ctx.Done():
			<-c.sealed // wait until nothing more can be queued
			c.drain(w)
			return
		}
	}
}

// drain delivers what is left in w while ctx lasts, then drops the rest.
func (c *cometClient) drain(w *worker) {
	for {
		select {
		case t := <-w.ch:
			if c.ctx.Err() != nil {
				c.metrics.drop(c.jobLog, c.dropReason.Load().(string), c.id, 1)
				continue
			}
			c.process(w, t)
		default:
			return
		}
	}
}

// process sends t. A push takes along the pushes queued behind it (up to
// PushBatchMax / PushBatchBytes) as one PushMsgs; a room or broadcast task
// met on the way is sent after that batch, so the queue's order is kept.
func (c *cometClient) process(w *worker, t task) {
	for {
		if w.congested.Load() && len(w.ch) <= cap(w.ch)/2 {
			w.congested.Store(false)
		}
		if t.kind != kindPush || c.cfg.PushBatchMax <= 1 {
			c.send(t)
			return
		}
		next, more := c.sendBatch(w, t)
		if !more {
			return
		}
		t = next
	}
}

// sendBatch sends first and the pushes queued behind it that fit the
// limits. It returns the task it took from the queue but did not send (a
// non-push, or a push that would overflow PushBatchBytes), if any.
func (c *cometClient) sendBatch(w *worker, first task) (next task, more bool) {
	batch := append(w.batch[:0], first)
	size := first.size()
collect:
	for len(batch) < c.cfg.PushBatchMax {
		select {
		case n := <-w.ch:
			if n.kind != kindPush {
				next, more = n, true
				break collect
			}
			if s := n.size(); size+s <= c.cfg.PushBatchBytes {
				batch = append(batch, n)
				size += s
				continue
			}
			next, more = n, true
			break collect
		default:
			break collect
		}
	}
	c.metrics.pushBatch.Observe(float64(len(batch)))
	if len(batch) == 1 {
		c.send(batch[0])
	} else {
		c.send(task{kind: kindPushBatch, batch: w.buildReq(batch)})
		w.releaseReq(len(batch))
	}
	clear(batch) // don't keep protos alive until the next batch
	w.batch = batch[:0]
	return next, more
}

// buildReq fills the worker's reused PushMsgs request with batch.
func (w *worker) buildReq(batch []task) *comet.PushMsgsReq {
	for len(w.reqs) < len(batch) {
		w.reqs = append(w.reqs, &comet.PushMsgReq{})
	}
	for i := range batch {
		r := w.reqs[i]
		r.Keys, r.ProtoOp, r.Proto = batch[i].keys, batch[i].op, batch[i].proto
	}
	w.req.Pushes = w.reqs[:len(batch)]
	return &w.req
}

// releaseReq drops the references of the first n reused requests once
// they were sent.
func (w *worker) releaseReq(n int) {
	for _, r := range w.reqs[:n] {
		r.Keys, r.Proto = nil, nil
	}
	w.req.Pushes = nil
}

func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// send calls the comet, retrying transient errors with backoff for as long
// as the client lives (the comet is in discovery and the job not closed).
func (c *cometClient) send(t task) {
	backoff := c.cfg.RetryBackoff
	method := t.method()
	obs, errs := c.metrics.rpcObs[method], c.metrics.rpcErrs[method]
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RPCTimeout)
		start := time.Now()
		err := c.call(ctx, t)
		cancel()
		obs.Observe(time.Since(start).Seconds())
		if err == nil {
			return
		}
		errs.Inc()
		if c.ctx.Err() != nil {
			c.metrics.drop(c.jobLog, c.dropReason.Load().(string), c.id, t.count())
			return
		}
		if !retryable(err) {
			c.metrics.drop(c.jobLog, ReasonRejected, c.id, t.count())
			c.log.Debug("comet rejected push", "method", method, "err", err)
			return
		}
		timer := time.NewTimer(backoff)
		select {
		case <-timer.C:
		case <-c.ctx.Done():
			timer.Stop()
			c.metrics.drop(c.jobLog, c.dropReason.Load().(string), c.id, t.count())
			return
		}
		backoff = min(2*backoff, c.cfg.MaxRetryBackoff)
	}
}

func (t *task) method() string {
	switch t.kind {
	case kindRoom:
		return methodBroadcastRoom
	case kindBroadcast:
		return methodBroadcast
	case kindPushBatch:
		return methodPushMsgs
	}
	return methodPushMsg
}

func (c *cometClient) call(ctx context.Context, t task) error {
	var err error
	switch t.kind {
	case kindPush:
		_, err = c.cli.PushMsg(ctx, &comet.PushMsgReq{Keys: t.keys, ProtoOp: t.op, Proto: t.proto})
	case kindPushBatch:
		return c.callBatch(ctx, t.batch)
	case kindRoom:
		_, err = c.cli.BroadcastRoom(ctx, &comet.BroadcastRoomReq{RoomId: t.room, Proto: t.proto})
	case kindBroadcast:
		_, err = c.cli.Broadcast(ctx, &comet.BroadcastReq{ProtoOp: t.op, Proto: t.proto, Speed: t.speed})
	}
	return err
}

// callBatch sends a PushMsgs. A comet without PushMsgs (older version,
// codes.Unimplemented) gets the pushes one PushMsg at a time from then on.
func (c *cometClient) callBatch(ctx context.Context, req *comet.PushMsgsReq) error {
	if !c.noBatch.Load() {
		reply, err := c.cli.PushMsgs(ctx, req)
		if status.Code(err) != codes.Unimplemented {
			if n := len(reply.GetInvalid()); n > 0 {
				c.metrics.drop(c.jobLog, ReasonRejected, c.id, n)
			}
			return err
		}
		c.noBatch.Store(true)
		c.log.Info("comet has no PushMsgs; pushing one by one")
	}
	for i, p := range req.Pushes {
		if _, err := c.cli.PushMsg(ctx, p); err != nil {
			if !retryable(err) {
				c.metrics.drop(c.jobLog, ReasonRejected, c.id, 1)
				continue
			}
			// Retry what has not been sent yet.
			req.Pushes = req.Pushes[i:]
			return err
		}
	}
	return nil
}

// remove stops the client at once: pending and in-flight pushes are dropped
// as ReasonCometRemoved.
func (c *cometClient) remove() {
	c.once.Do(func() {
		c.dropReason.Store(ReasonCometRemoved)
		c.cancel()
		c.seal()
		c.wg.Wait()
		c.closeConn()
	})
}

// shutdown stops accepting pushes, lets the workers deliver what is queued
// for up to timeout, then drops the rest as ReasonShutdown.
func (c *cometClient) shutdown(timeout time.Duration) {
	c.once.Do(func() {
		c.dropReason.Store(ReasonShutdown)
		c.seal()
		t := time.AfterFunc(timeout, c.cancel)
		c.wg.Wait()
		t.Stop()
		c.cancel()
		c.closeConn()
	})
}

func (c *cometClient) seal() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	close(c.sealed)
}

func (c *cometClient) closeConn() {
	if c.closer != nil {
		if err := c.closer.Close(); err != nil {
			c.log.Debug("closing comet connection", "err", err)
		}
	}
}
