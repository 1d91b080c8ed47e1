package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/backoff"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of FanoutConfig.
const (
	// DefaultFullPushMaxMembers is the largest group whose members get the
	// full message; larger groups get MsgNotify and pull.
	DefaultFullPushMaxMembers = 500
	// DefaultBurstPerSecond is how many messages per second one group
	// conversation may push in full before its members get MsgNotify.
	DefaultBurstPerSecond = 50
	// DefaultPreviewBytes bounds the payload preview in notifications.
	DefaultPreviewBytes = 64
	burstWindow         = time.Second
	// burstSweepEvery bounds the burst table: it is cleared of idle
	// conversations once per this many windows.
	burstSweepEvery = 60
	// fanoutBatchMax bounds the records of one partition fanned out with
	// one device lookup.
	fanoutBatchMax = 256
	// fanoutRetryMin and fanoutRetryMax bound the backoff (with jitter, so
	// that jobs failing together do not retry in step) between attempts
	// to fan out a deferred batch whose lookup or dispatch failed.
	fanoutRetryMin = 50 * time.Millisecond
	fanoutRetryMax = 2 * time.Second
)

// DeviceLookup finds the online devices of users.
type DeviceLookup interface {
	Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error)
}

// MemberLister lists the members of a group. NewFanout puts a
// members.Cache in front of it (FanoutConfig.MemberCache) unless it is a
// *members.Cache already (a process running logic too may pass the IM
// service's, whose group changes then take effect at once). The fan-out
// never modifies the returned slice.
type MemberLister interface {
	Members(ctx context.Context, groupID int64) ([]int64, error)
}

// Dispatcher hands a push to the comets (job's comet clients). It returns
// once the push is queued, not delivered.
type Dispatcher interface {
	Dispatch(ctx context.Context, p *logicpb.PushMsg) error
}

// FanoutConfig configures the fan-out. The zero value is the default.
type FanoutConfig struct {
	// FullPushMaxMembers: groups up to this size get full messages.
	// Default DefaultFullPushMaxMembers.
	FullPushMaxMembers int `yaml:"full_push_max_members"`
	// BurstPerSecond: group messages per second pushed in full before the
	// rest of the second is sent as MsgNotify. Default DefaultBurstPerSecond.
	BurstPerSecond int `yaml:"burst_per_second"`
	// PreviewBytes bounds the notification preview. Default DefaultPreviewBytes.
	PreviewBytes int `yaml:"preview_bytes"`
	// MemberCache caches the member lists group messages are fanned out
	// to (ttl default 2s, negative: off, every group message batch reads
	// the store; max_groups default 10000; max_members default 1048576).
	// Group changes are made by logic, never through the fan-out's cache:
	// a member added or removed is pushed to, or not, as before the change
	// for up to ttl (a new member can always sync the messages it missed).
	MemberCache members.Config `yaml:"member_cache"`
}

// FanoutDeps are the fan-out's collaborators. Notifier may be nil (no
// offline notifications).
type FanoutDeps struct {
	Devices    DeviceLookup
	Members    MemberLister
	Dispatcher Dispatcher
	Notifier   Notifier
	Logger     *slog.Logger
	Now        func() time.Time
	// Registerer registers the member cache's metrics
	// (hubuim_member_cache_lookups_total{cache="fanout"}); nil: none.
	Registerer prometheus.Registerer
}

// Fanout consumes MsgEvents (the message topic) and pushes them to every
// online device of every recipient, except the device they came from.
type Fanout struct {
	cfg  FanoutConfig
	deps FanoutDeps

	mu        sync.Mutex
	burst     map[string]*burstCount
	lastSweep time.Time

	qmu    sync.Mutex
	queues map[partitionID]*partitionQueue
	wg     sync.WaitGroup // drain goroutines
}

type burstCount struct {
	window time.Time
	n      int
}

// NewFanout validates its dependencies.
func NewFanout(cfg FanoutConfig, deps FanoutDeps) (*Fanout, error) {
	if deps.Devices == nil || deps.Members == nil || deps.Dispatcher == nil {
		return nil, errors.New("im: fanout needs devices, members and a dispatcher")
	}
	if cfg.FullPushMaxMembers <= 0 {
		cfg.FullPushMaxMembers = DefaultFullPushMaxMembers
	}
	if cfg.BurstPerSecond <= 0 {
		cfg.BurstPerSecond = DefaultBurstPerSecond
	}
	if cfg.PreviewBytes <= 0 {
		cfg.PreviewBytes = DefaultPreviewBytes
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if err := cfg.MemberCache.Validate("fanout.member_cache."); err != nil {
		return nil, err
	}
	if _, shared := deps.Members.(*members.Cache); !shared && cfg.MemberCache.Enabled() {
		var m *members.Metrics
		if deps.Registerer != nil {
			var err error
			if m, err = members.NewMetrics(deps.Registerer, "fanout"); err != nil {
				return nil, err
			}
		}
		c, err := members.New(cfg.MemberCache, deps.Members, m)
		if err != nil {
			return nil, err
		}
		deps.Members = c
	}
	deps.Devices = &deviceCoalescer{next: deps.Devices}
	return &Fanout{cfg: cfg, deps: deps, burst: make(map[string]*burstCount), queues: make(map[partitionID]*partitionQueue)}, nil
}

// MemberCache returns the member cache the fan-out reads (its own or the
// one it was given), nil when there is none.
func (f *Fanout) MemberCache() *members.Cache {
	c, _ := f.deps.Members.(*members.Cache)
	return c
}

// Handle is an mq.Handler for the message topic. A malformed record is
// logged and skipped (redelivering it cannot help).
//
// A record a consumer delivered is deferred: it joins its partition's
// queue and Handle returns at once, so the consumer hands over the next
// records while a lookup is in flight. A partition's queued records are
// fanned out together, in order: one device lookup for all their
// recipients, then their pushes, then their acknowledgements. A failed
// lookup or dispatch is retried (with backoff) until it succeeds or the
// record's partition is taken away, which redelivers it. A Message built
// by hand is fanned out before Handle returns, and a failure is returned.
func (f *Fanout) Handle(ctx context.Context, m *mq.Message) error {
	ev := &logicpb.MsgEvent{}
	if err := proto.Unmarshal(m.Value, ev); err != nil {
		f.deps.Logger.Warn("im: skip malformed message event", "partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	if !m.CanDefer() {
		_, err := f.fanOut(ctx, []fanItem{{ctx: ctx, ev: ev}})
		return err
	}
	f.enqueue(partitionID{m.Topic, m.Partition}, fanItem{ctx: ctx, ev: ev, ack: m.Defer()})
	return nil
}

// fanItem is one record waiting in its partition's queue.
type fanItem struct {
	ctx context.Context // the consumer's, ends when the partition is taken away
	ev  *logicpb.MsgEvent
	ack mq.Ack
}

type partitionID struct {
	topic     string
	partition int32
}

// partitionQueue holds a partition's records not fanned out yet. Its
// drain goroutine runs only while it holds records. Its length is bounded
// by the consumer, which holds at most mq.MaxUnacked unacknowledged
// records per partition.
type partitionQueue struct {
	items   []fanItem
	running bool
}

func (f *Fanout) enqueue(id partitionID, it fanItem) {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	q := f.queues[id]
	if q == nil {
		q = &partitionQueue{}
		f.queues[id] = q
	}
	q.items = append(q.items, it)
	if !q.running {
		q.running = true
		f.wg.Go(func() { f.drain(id, q) })
	}
}

// Wait waits for the goroutines fanning out deferred records. They end
// once their queues are empty or the records' contexts are done, so call
// it after the consumer stopped, before the Dispatcher is closed.
func (f *Fanout) Wait() { f.wg.Wait() }

// drain fans out q's records in batches of at most fanoutBatchMax until q
// is empty, then forgets q.
func (f *Fanout) drain(id partitionID, q *partitionQueue) {
	for {
		f.qmu.Lock()
		n := min(len(q.items), fanoutBatchMax)
		if n == 0 {
			q.running = false
			q.items = nil
			delete(f.queues, id)
			f.qmu.Unlock()
			return
		}
		batch := q.items[:n:n] // appends go past it, never into it
		q.items = q.items[n:]
		f.qmu.Unlock()
		f.fanOutRetrying(batch)
	}
}

// fanOutRetrying fans batch out, retrying with backoff; records whose
// partition was taken away meanwhile are dropped unacknowledged (their
// next owner gets them).
func (f *Fanout) fanOutRetrying(batch []fanItem) {
	delay := backoff.New(fanoutRetryMin, fanoutRetryMax)
	for {
		batch = slices.DeleteFunc(batch, func(it fanItem) bool { return it.ctx.Err() != nil })
		if len(batch) == 0 {
			return
		}
		done, err := f.fanOut(batch[0].ctx, batch)
		// The records handed over in full are acknowledged and not retried:
		// their offline users are notified once.
		for _, it := range batch[:done] {
			it.ack.Done()
		}
		batch = batch[done:]
		if err == nil {
			return
		}
		wait := delay.Next()
		f.deps.Logger.Warn("im: fan-out failed; retrying", "records", len(batch), "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-batch[0].ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// fanPlan is what one record pushes: op/body to the online devices of
// users except originKey; msg (MESSAGE records only) for the offline
// notifications.
type fanPlan struct {
	users     []int64
	originKey string
	op        int32
	body      []byte
	msg       *protocol.Msg
	item      int // fanOut: the index of the item the plan came from
}

// fanOut pushes items in order with one device lookup for all of them.
// done is how many leading items were handed over in full (all of them
// when err is nil): a retry starts after them.
func (f *Fanout) fanOut(ctx context.Context, items []fanItem) (done int, err error) {
	plans := make([]fanPlan, 0, len(items))
	var users []int64
	for i, it := range items {
		p, ok, err := f.plan(ctx, it.ev)
		if err != nil {
			return 0, err
		}
		if ok && len(p.users) > 0 {
			p.item = i
			plans = append(plans, p)
			users = append(users, p.users...)
		}
	}
	if len(plans) == 0 {
		return len(items), nil
	}
	slices.Sort(users)
	devices, err := f.deps.Devices.Devices(ctx, slices.Compact(users))
	if err != nil {
		return 0, fmt.Errorf("im: fanout devices: %w", err)
	}
	for _, p := range plans {
		offline, err := f.push(ctx, devices, p)
		if err != nil {
			return p.item, err
		}
		if p.msg != nil {
			f.notify(ctx, p.msg, offline)
		}
	}
	return len(items), nil
}

// plan decodes what ev pushes; ok is false for an event with nothing to
// push (an empty or unknown kind, a deleted group).
func (f *Fanout) plan(ctx context.Context, ev *logicpb.MsgEvent) (fanPlan, bool, error) {
	switch ev.Kind {
	case logicpb.MsgEvent_MESSAGE:
		if ev.Msg == nil {
			return fanPlan{}, false, nil
		}
		return f.planMessage(ctx, ev)
	case logicpb.MsgEvent_READ_MARK:
		if ev.ReadMark == nil {
			return fanPlan{}, false, nil
		}
		body, err := proto.Marshal(ev.ReadMark)
		return fanPlan{users: ev.Users, originKey: ev.OriginKey, op: protocol.OpReadMark, body: body}, err == nil, err
	case logicpb.MsgEvent_PRESENCE:
		if ev.Presence == nil {
			return fanPlan{}, false, nil
		}
		body, err := proto.Marshal(ev.Presence)
		return fanPlan{users: ev.Users, op: protocol.OpPresenceEvent, body: body}, err == nil, err
	default:
		return fanPlan{}, false, nil
	}
}

func (f *Fanout) planMessage(ctx context.Context, ev *logicpb.MsgEvent) (fanPlan, bool, error) {
	msg := ev.Msg
	p := fanPlan{users: ev.Users, originKey: ev.OriginKey, op: protocol.OpMsgPush, msg: msg}
	if msg.ConvType == protocol.ConvType_CONV_TYPE_GROUP {
		members, err := f.deps.Members.Members(ctx, msg.To)
		if errors.Is(err, store.ErrNotFound) {
			return fanPlan{}, false, nil // the group was deleted after the message
		}
		if err != nil {
			return fanPlan{}, false, fmt.Errorf("im: fanout members: %w", err)
		}
		p.users = members
		if len(members) > f.cfg.FullPushMaxMembers || f.overBurst(msg.ConvId) {
			p.op = protocol.OpMsgNotify
			b, err := proto.Marshal(&protocol.MsgNotify{ConvId: msg.ConvId, MaxSeq: msg.Seq})
			if err != nil {
				return fanPlan{}, false, err
			}
			p.body = b
		}
	}
	if p.body == nil {
		b, err := proto.Marshal(msg)
		if err != nil {
			return fanPlan{}, false, err
		}
		p.body = b
	}
	return p, true, nil
}

// notify hands the offline recipients of msg (never its sender) to the
// notifier. Best effort: the message is stored and will be synced, and
// redelivering the event would push it twice.
func (f *Fanout) notify(ctx context.Context, msg *protocol.Msg, offline []int64) {
	if f.deps.Notifier == nil || len(offline) == 0 {
		return
	}
	notes := make([]*Notification, 0, len(offline))
	preview := msg.Payload[:min(len(msg.Payload), f.cfg.PreviewBytes)]
	for _, u := range offline {
		if u == msg.Sender {
			continue
		}
		notes = append(notes, &Notification{User: u, ConvID: msg.ConvId, Seq: msg.Seq, MsgID: msg.MsgId, Sender: msg.Sender, ContentType: msg.ContentType, Preview: preview})
	}
	if len(notes) == 0 {
		return
	}
	if err := f.deps.Notifier.Notify(ctx, notes); err != nil {
		f.deps.Logger.Warn("im: offline notification failed", "conv", msg.ConvId, "users", len(notes), "err", err)
	}
}

// push sends p to every online device (in devices) of p's users except
// p.originKey, one PushMsg per comet, and returns the users with no
// online device.
func (f *Fanout) push(ctx context.Context, devices map[int64][]session.Device, p fanPlan) ([]int64, error) {
	byServer := make(map[string][]string)
	var offline []int64
	for _, u := range p.users {
		ds := devices[u]
		if len(ds) == 0 {
			offline = append(offline, u)
			continue
		}
		for _, d := range ds {
			if d.Key != p.originKey {
				byServer[d.Server] = append(byServer[d.Server], d.Key)
			}
		}
	}
	for server, keys := range byServer {
		pm := &logicpb.PushMsg{Type: logicpb.PushMsg_PUSH, Operation: p.op, Server: server, Keys: keys, Msg: p.body}
		if err := f.deps.Dispatcher.Dispatch(ctx, pm); err != nil {
			return nil, fmt.Errorf("im: fanout dispatch to %s: %w", server, err)
		}
	}
	return offline, nil
}

// overBurst counts a group message and reports whether its conversation
// went over the per-second full-push budget.
func (f *Fanout) overBurst(convID string) bool {
	now := f.deps.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.lastSweep) > burstSweepEvery*burstWindow {
		for k, b := range f.burst {
			if now.Sub(b.window) > burstWindow {
				delete(f.burst, k)
			}
		}
		f.lastSweep = now
	}
	b := f.burst[convID]
	if b == nil {
		b = &burstCount{window: now}
		f.burst[convID] = b
	}
	if now.Sub(b.window) > burstWindow {
		b.window, b.n = now, 0
	}
	b.n++
	return b.n > f.cfg.BurstPerSecond
}
