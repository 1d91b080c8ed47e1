// Package job is the Job tier: it consumes push records from the queue and
// fans them out to the comets over gRPC. Each comet gets its own client with
// a fixed number of workers and bounded queues (pushes to one device key
// always use one worker, so they stay in order), a room's pushes are
// batched in short windows, and one slow or dead comet cannot stall the
// others: a full queue is waited on for a bounded time, then pushes to it
// are dropped with a metric and a log line.
//
// Offsets: the queue handler returns once a push was handed to the target
// comets' queues, so the record is committed after the handoff, never
// before it; a crash re-delivers instead of losing. Room pushes are handed
// to the room batcher, which hands them to the queues within
// Config.RoomBatchWindow: their records are deferred (mq.Message.Defer) and
// acknowledged when their batch is handed over, so a crash inside the
// window re-delivers them too. Close flushes the open batches before it
// stops the consumer, so their records are committed, not redelivered.
package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// Errors.
var (
	ErrClosed  = errors.New("job: closed")
	ErrRunning = errors.New("job: already running")
)

// Deps are a Job's collaborators.
type Deps struct {
	// Consumer delivers the records of the topics job handles (mq.TopicPush).
	// Required. The caller closes it after Job.Close.
	Consumer mq.Consumer
	// Watcher lists the comets (discovery.ServiceComet). Required.
	Watcher discovery.Watcher
	// Dial opens a comet client; nil means DialGRPC.
	Dial DialFunc
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer for the metrics; nil means not registered.
	Registerer prometheus.Registerer
}

// cometView is an immutable snapshot of the comets, swapped atomically so
// the per-push path takes no lock.
type cometView struct {
	byID map[string]*cometClient
	all  []*cometClient
}

// Job routes push records to comets.
type Job struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	metrics  *metrics
	handlers map[string]mq.Handler // by topic
	rooms    *roomBatcher
	view     atomic.Pointer[cometView]

	mu       sync.Mutex
	closed   bool
	running  bool
	stopRun  context.CancelFunc
	runDone  chan struct{}
	clients  map[string]*cometClient // owned by the watch loop while running
	leaving  map[string]*leave       // clients kept for CometGrace after leaving discovery
	draining map[string]bool         // comets whose last listing said Draining
	removals sync.WaitGroup          // clients being removed in the background
}

// New checks cfg and deps; nothing runs until Run.
func New(cfg Config, deps Deps) (*Job, error) {
	cfg, err := cfg.withDefaults("job")
	if err != nil {
		return nil, err
	}
	if deps.Consumer == nil {
		return nil, errors.New("job: Deps.Consumer is required")
	}
	if deps.Watcher == nil {
		return nil, errors.New("job: Deps.Watcher is required")
	}
	if deps.Dial == nil {
		deps.Dial = DialGRPC
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	j := &Job{
		cfg:      cfg,
		deps:     deps,
		log:      deps.Logger.With("component", "job"),
		metrics:  newMetrics(),
		clients:  make(map[string]*cometClient),
		leaving:  make(map[string]*leave),
		draining: make(map[string]bool),
	}
	j.handlers = map[string]mq.Handler{mq.TopicPush: j.handlePush}
	j.rooms = newRoomBatcher(cfg.RoomBatchWindow, cfg.RoomBatchMax, cfg.RoomBatchBytes, j.deliverRoom)
	j.view.Store(&cometView{byID: map[string]*cometClient{}})
	if err := j.metrics.register(deps.Registerer, queueCollector{j}); err != nil {
		return nil, fmt.Errorf("job: metrics: %w", err)
	}
	return j, nil
}

// Handle adds the handler of another topic (e.g. the IM message topic,
// whose handler fans events out through Dispatch). Call it before Run.
func (j *Job) Handle(topic string, h mq.Handler) {
	j.handlers[topic] = h
}

// Dispatch routes one push as if it had been consumed from the push topic:
// it returns once the push is queued for its comets, not delivered. A ROOM
// push is only added to its room's batch (there is no record to
// acknowledge later): a caller that commits a record after Dispatch could
// lose it in a crash inside the batch window.
func (j *Job) Dispatch(ctx context.Context, pm *logic.PushMsg) error {
	return j.route(ctx, pm, nil)
}

// Topics are the topics Job has handlers for; its consumer should consume
// exactly these.
func (j *Job) Topics() []string {
	out := make([]string, 0, len(j.handlers))
	for t := range j.handlers {
		out = append(out, t)
	}
	return out
}

// Run waits for the first comet list, then consumes until ctx is done (it
// returns nil), Close is called (ErrClosed), or the consumer fails.
func (j *Job) Run(ctx context.Context) error {
	j.mu.Lock()
	switch {
	case j.closed:
		j.mu.Unlock()
		return ErrClosed
	case j.running:
		j.mu.Unlock()
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.running, j.stopRun, j.runDone = true, cancel, make(chan struct{})
	done := j.runDone
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.running = false
		j.mu.Unlock()
		close(done)
	}()

	updates, err := j.deps.Watcher.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		return fmt.Errorf("job: watch comets: %w", err)
	}
	select {
	case list, ok := <-updates:
		if !ok {
			return j.stopErr(ctx)
		}
		j.apply(list)
	case <-ctx.Done():
		return j.stopErr(ctx)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for list := range updates { // closed when ctx is done
			j.apply(list)
		}
	})

	err = j.deps.Consumer.Run(ctx, j.handle)
	cancel()
	if j.isClosed() {
		return ErrClosed
	}
	return err
}

func (j *Job) stopErr(ctx context.Context) error {
	if j.isClosed() {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("job: comet watch ended")
}

func (j *Job) isClosed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.closed
}

// Close flushes the room batches (pushes consumed from now on are not
// batched), stops Run, lets the comet workers deliver what is queued for
// up to DrainTimeout, and stops every goroutine. Flushing first
// acknowledges the batched records while the consumer still runs, so they
// are committed rather than redelivered.
func (j *Job) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	stop, done := j.stopRun, j.runDone
	for id, l := range j.leaving {
		l.timer.Stop()
		delete(j.leaving, id)
	}
	j.mu.Unlock()
	j.rooms.close()
	if stop != nil {
		stop()
		<-done
	}
	j.removals.Wait()

	j.mu.Lock()
	clients := j.clients
	j.clients = map[string]*cometClient{}
	j.mu.Unlock()
	j.view.Store(&cometView{byID: map[string]*cometClient{}})
	j.metrics.comets.Set(0)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.shutdown(j.cfg.DrainTimeout) })
	}
	wg.Wait()
	return nil
}

// apply makes list the set of comets: new ones get a client, ones whose
// address changed are replaced, and gone ones are kept for CometGrace
// (unless they come back) and then removed in the background.
func (j *Job) apply(list []discovery.Instance) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	next := make(map[string]*cometClient, len(list))
	wasDraining := j.draining
	j.draining = make(map[string]bool, len(list))
	for _, ins := range list {
		if ins.Draining {
			j.draining[ins.ID] = true
		}
		addr := ins.Addrs[discovery.AddrGRPC]
		if addr == "" {
			j.log.Warn("comet has no gRPC address; ignored", "comet", ins.ID)
			continue
		}
		if c := j.clients[ins.ID]; c != nil && c.addr == addr {
			next[ins.ID] = c
			continue
		}
		cli, closer, err := j.deps.Dial(ins)
		if err != nil {
			j.log.Error("cannot dial comet; ignored", "comet", ins.ID, "addr", addr, "err", err)
			continue
		}
		next[ins.ID] = newCometClient(ins, cli, closer, &j.cfg, j.log, j.metrics)
		j.log.Info("comet added", "comet", ins.ID, "addr", addr)
	}
	for id, l := range j.leaving {
		if next[id] != nil { // back (or replaced): no longer leaving
			l.timer.Stop()
			delete(j.leaving, id)
		}
	}
	var gone []*cometClient
	for id, c := range j.clients {
		switch {
		case next[id] == c:
		// A comet that said it was draining leaves discovery after it
		// closed its connections and its gRPC server: nothing to wait
		// for. One that left without (a lapsed lease) may be back.
		case next[id] == nil && j.cfg.CometGrace > 0 && !wasDraining[id]:
			next[id] = c
			if j.leaving[id] == nil {
				j.log.Info("comet left discovery; kept for the grace period", "comet", id, "grace", j.cfg.CometGrace)
				l := new(leave)
				l.timer = time.AfterFunc(j.cfg.CometGrace, func() { j.expire(id, c, l) })
				j.leaving[id] = l
			}
		default:
			gone = append(gone, c)
		}
	}
	j.setClients(next)
	for _, c := range gone {
		j.log.Info("comet removed", "comet", c.id, "pending", c.depth())
		j.removals.Go(c.remove)
	}
}

// leave is a comet's stay after it left discovery. j.mu guards timer.
type leave struct{ timer *time.Timer }

// expire removes c, which left discovery CometGrace ago (l), unless it
// came back or was replaced since (l is then no longer the comet's: one
// that came back and left again has a newer one).
func (j *Job) expire(id string, c *cometClient, l *leave) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.clients[id] != c || j.leaving[id] != l {
		return
	}
	delete(j.leaving, id)
	next := maps.Clone(j.clients)
	delete(next, id)
	j.setClients(next)
	j.log.Info("comet removed after the grace period", "comet", id, "pending", c.depth())
	j.removals.Go(c.remove)
}

// setClients makes next the comets pushes are routed to. j.mu is held.
func (j *Job) setClients(next map[string]*cometClient) {
	j.clients = next
	v := &cometView{byID: next, all: make([]*cometClient, 0, len(next))}
	for _, c := range next {
		v.all = append(v.all, c)
	}
	j.view.Store(v)
	j.metrics.comets.Set(float64(len(next)))
}

// handle dispatches a record by topic.
func (j *Job) handle(ctx context.Context, m *mq.Message) error {
	h, ok := j.handlers[m.Topic]
	if !ok {
		j.metrics.drop(j.log, ReasonUnknownTopic, "", 1)
		return nil
	}
	return h(ctx, m)
}

// handlePush routes one logic.PushMsg. A record that does not decode is
// dropped (and committed): retrying it could never succeed.
func (j *Job) handlePush(ctx context.Context, m *mq.Message) error {
	var pm logic.PushMsg
	if err := proto.Unmarshal(m.Value, &pm); err != nil {
		j.metrics.drop(j.log, ReasonBadRecord, "", 1)
		return nil
	}
	return j.route(ctx, &pm, m)
}

// route queues pm for its comets. m is its record, nil for Dispatch: a
// room push defers m, which the room batcher acknowledges once its batch
// is handed to the comets.
func (j *Job) route(ctx context.Context, pm *logic.PushMsg, m *mq.Message) error {
	switch pm.Type {
	case logic.PushMsg_PUSH:
		j.metrics.pushByKind[kindPush].Inc()
		return j.pushKeys(ctx, pm)
	case logic.PushMsg_ROOM:
		j.metrics.pushByKind[kindRoom].Inc()
		var ack mq.Ack
		if m != nil {
			ack = m.Defer()
		}
		j.rooms.add(pm.Room, pm.Operation, pm.Msg, ack)
		return nil
	case logic.PushMsg_BROADCAST:
		j.metrics.pushByKind[kindBroadcast].Inc()
		return j.broadcast(ctx, pm)
	}
	j.metrics.drop(j.log, ReasonBadRecord, "", 1)
	return nil
}

// pushKeys queues a push to the keys' comet, keys split by worker.
func (j *Job) pushKeys(ctx context.Context, pm *logic.PushMsg) error {
	if len(pm.Keys) == 0 {
		return nil
	}
	c := j.view.Load().byID[pm.Server]
	if c == nil {
		j.metrics.drop(j.log, ReasonUnknownComet, pm.Server, 1)
		return nil
	}
	p := &protocol.Proto{Ver: protocol.Version, Op: pm.Operation, Body: pm.Msg}
	w0 := c.workerFor(pm.Keys[0])
	same := true
	for _, k := range pm.Keys[1:] {
		if c.workerFor(k) != w0 {
			same = false
			break
		}
	}
	if same {
		return c.enqueue(ctx, w0, task{kind: kindPush, keys: pm.Keys, op: pm.Operation, proto: p})
	}
	byWorker := make(map[int][]string)
	for _, k := range pm.Keys {
		w := c.workerFor(k)
		byWorker[w] = append(byWorker[w], k)
	}
	for w, keys := range byWorker {
		if err := c.enqueue(ctx, w, task{kind: kindPush, keys: keys, op: pm.Operation, proto: p}); err != nil {
			return err
		}
	}
	return nil
}

// broadcast queues a push to every comet, splitting the requested speed
// (connections per second) between them.
func (j *Job) broadcast(ctx context.Context, pm *logic.PushMsg) error {
	all := j.view.Load().all
	if len(all) == 0 {
		j.metrics.drop(j.log, ReasonNoComets, "", 1)
		return nil
	}
	speed := pm.Speed
	if speed > 0 {
		speed = max(speed/int32(len(all)), 1)
	}
	p := &protocol.Proto{Ver: protocol.Version, Op: pm.Operation, Body: pm.Msg}
	t := task{kind: kindBroadcast, op: pm.Operation, speed: speed, proto: p}
	for _, c := range all {
		if err := c.enqueue(ctx, 0, t); err != nil {
			return err
		}
	}
	return nil
}

// deliverRoom hands a room batch to every comet (a comet ignores rooms it
// does not host); the batcher acknowledges its records afterwards. A comet
// that left discovery drops it with a metric, which counts as handled. It
// does not stop on a context: it runs on the batch's timer, and a batch
// whose consumer stopped is still worth delivering.
func (j *Job) deliverRoom(room string, p *protocol.Proto, n int) {
	j.metrics.batchSize.Observe(float64(n))
	t := task{kind: kindRoom, room: room, op: p.Op, proto: p}
	all := j.view.Load().all
	if len(all) == 0 {
		j.metrics.drop(j.log, ReasonNoComets, "", n)
		return
	}
	for _, c := range all {
		_ = c.enqueue(context.Background(), c.workerFor(room), t)
	}
}

// queueCollector reports each comet's queue depth at scrape time, so the
// push path does no metric work for it.
type queueCollector struct{ j *Job }

func (q queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.j.metrics.queueDepth }

func (q queueCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range q.j.view.Load().all {
		ch <- prometheus.MustNewConstMetric(q.j.metrics.queueDepth, prometheus.GaugeValue, float64(c.depth()), c.id)
	}
}
