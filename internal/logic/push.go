package logic

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/batch"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// Push kinds (metric label).
const (
	kindKeys = "keys"
	kindMids = "mids"
	kindRoom = "room"
	kindAll  = "all"
)

// Record types (metric label).
const (
	recordPush      = "push"
	recordRoom      = "room"
	recordBroadcast = "broadcast"
)

// linearGroups is how many comets are looked up by linear scan before the
// grouping switches to a map.
const linearGroups = 8

// maxParallelPublish bounds the records of one push published at once.
const maxParallelPublish = 8

// maxPooledScratch bounds the buffer a pooled scratch keeps.
const maxPooledScratch = 1 << 20

// Lookup coalescing of the push APIs, see coalescer.
const (
	// maxLookupsInFlight bounds the store lookups (one Redis round trip
	// each) a push API runs at once; pushes arriving while that many are
	// in flight wait and share the next one.
	maxLookupsInFlight = 4
	// maxLookupBatch bounds the targets of one shared lookup (a push with
	// more targets still gets a lookup of its own).
	maxLookupBatch = 512
	// sharedLookupTimeout bounds a shared lookup: it answers several
	// requests, so none of their contexts may cancel it.
	sharedLookupTimeout = 5 * time.Second
)

// coalescer shares store lookups between concurrent pushes (leader and
// followers, batch.Group): while maxLookupsInFlight lookups are in flight,
// the targets of the pushes that arrive are queued into one batch (up to
// maxLookupBatch targets), looked up in one call (one pipelined round
// trip) when a lookup finishes. A lone push is looked up at once, without
// waiting, with its own context. The first push of a batch runs it, also
// if its context ends, on its context without the cancellation, bounded by
// sharedLookupTimeout; the others wait for its answer or their context. A
// lookup that panics answers the other pushes of its batch
// batch.ErrAborted.
type coalescer[In, Out any] struct {
	lookup func(context.Context, []In) (Out, error)

	once  sync.Once
	group *batch.Group[In, Out]
	err   error // of batch.New; never set with the constant config
}

func (c *coalescer[In, Out]) init() {
	c.group, c.err = batch.New(batch.Config[In, Out]{
		Run:         c.lookup,
		MaxInFlight: maxLookupsInFlight,
		MaxItems:    maxLookupBatch,
		Timeout:     sharedLookupTimeout,
		Abandon:     true,
	})
}

// do looks in up, possibly together with other pushes: out is the answer
// for a batch in which in starts at off. out is shared: read it only.
func (c *coalescer[In, Out]) do(ctx context.Context, in []In) (out Out, off int, err error) {
	if c.once.Do(c.init); c.err != nil {
		return out, 0, c.err
	}
	return c.group.Do(ctx, in)
}

// pushLookups are the coalesced store lookups of one push API (HTTP or
// gRPC).
type pushLookups struct {
	devices coalescer[int64, map[int64][]session.Device]
	servers coalescer[string, []string]
}

func (l *Logic) newPushLookups() *pushLookups {
	return &pushLookups{
		devices: coalescer[int64, map[int64][]session.Device]{lookup: l.store.Devices},
		servers: coalescer[string, []string]{lookup: l.store.Servers},
	}
}

type pushGroup struct {
	server string
	off, n int
}

// pushScratch holds the reusable buffers of one push by keys or mids.
type pushScratch struct {
	keys    []string // push by mids: the users' device keys
	servers []string // push by mids: their comets
	gidx    []int32  // group of each key, -1 when offline
	groups  []pushGroup
	index   map[string]int32 // server → group, once groups > linearGroups
	flat    []string         // keys ordered by group
	buf     []byte           // marshalled record(s) and record key(s)
	ends    []int            // several comets: end of each value and key in buf
	msg     pb.PushMsg
}

func (s *pushScratch) find(server string) int32 {
	if s.index != nil && len(s.groups) > linearGroups {
		if g, ok := s.index[server]; ok {
			return g
		}
	} else {
		for g := range s.groups {
			if s.groups[g].server == server {
				return int32(g)
			}
		}
	}
	g := int32(len(s.groups))
	s.groups = append(s.groups, pushGroup{server: server})
	if len(s.groups) > linearGroups {
		if s.index == nil {
			s.index = make(map[string]int32)
		}
		if len(s.groups) == linearGroups+1 {
			for i, grp := range s.groups {
				s.index[grp.server] = int32(i)
			}
		}
		s.index[server] = g
	}
	return g
}

// group orders the online keys by comet (servers[i] is the comet of
// keys[i], "" when offline), dropping duplicate keys, and returns how
// many keys were offline. Group g's keys are s.flat[off:off+n].
func (s *pushScratch) group(keys, servers []string) (offline int) {
	s.groups = s.groups[:0]
	s.gidx = s.gidx[:0]
	clear(s.index)
	for _, srv := range servers {
		if srv == "" {
			s.gidx = append(s.gidx, -1)
			offline++
			continue
		}
		g := s.find(srv)
		s.groups[g].n++
		s.gidx = append(s.gidx, g)
	}
	total := 0
	for g := range s.groups {
		s.groups[g].off = total
		total += s.groups[g].n
		s.groups[g].n = 0
	}
	s.flat = slices.Grow(s.flat[:0], total)[:total]
	for i, g := range s.gidx {
		if g < 0 {
			continue
		}
		grp := &s.groups[g]
		s.flat[grp.off+grp.n] = keys[i]
		grp.n++
	}
	for g := range s.groups {
		grp := &s.groups[g]
		keys := s.flat[grp.off : grp.off+grp.n]
		slices.Sort(keys)
		grp.n = len(slices.Compact(keys))
	}
	return offline
}

func (l *Logic) getScratch() *pushScratch {
	if s, ok := l.scratch.Get().(*pushScratch); ok {
		return s
	}
	return new(pushScratch)
}

func (l *Logic) putScratch(s *pushScratch) {
	if cap(s.buf) > maxPooledScratch || cap(s.flat) > maxPooledScratch {
		return
	}
	clear(s.flat[:cap(s.flat)])
	clear(s.keys[:cap(s.keys)])
	clear(s.servers[:cap(s.servers)])
	s.msg.Reset()
	l.scratch.Put(s)
}

// checkPush validates the parts every push has.
func (l *Logic) checkPush(op int32, msg []byte) error {
	if op < protocol.OpBusinessMin || op > l.cfg.Push.MaxOp {
		return fmt.Errorf("%w: operation must be in [%d, %d]", ErrInvalidArgument, protocol.OpBusinessMin, l.cfg.Push.MaxOp)
	}
	if len(msg) > l.cfg.Push.MaxBody {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg), l.cfg.Push.MaxBody)
	}
	return nil
}

func (l *Logic) checkTargets(what string, n int) error {
	if n == 0 {
		return fmt.Errorf("%w: no %s", ErrInvalidArgument, what)
	}
	if n > l.cfg.Push.MaxTargets {
		return fmt.Errorf("%w: %d %s, limit %d", ErrInvalidArgument, n, what, l.cfg.Push.MaxTargets)
	}
	return nil
}

func (l *Logic) count(kind string, err error) error {
	res := resultOK
	switch {
	case err == nil:
	case errors.Is(err, ErrInvalidArgument):
		res = resultBadRequest
	case errors.Is(err, ErrUnavailable):
		res = resultUnavailable
	default:
		res = resultError
	}
	l.m.push.WithLabelValues(kind, res).Inc()
	return err
}

// PushKeys pushes msg with op to device keys: one PUSH record per comet
// holding some of them. Offline keys are skipped.
func (l *Logic) PushKeys(ctx context.Context, op int32, keys []string, msg []byte) error {
	return l.count(kindKeys, l.pushKeys(ctx, nil, op, keys, msg))
}

// pushKeys looks the keys up through lk (nil: straight in the store).
func (l *Logic) pushKeys(ctx context.Context, lk *pushLookups, op int32, keys []string, msg []byte) error {
	if err := l.checkPush(op, msg); err != nil {
		return err
	}
	if err := l.checkTargets("keys", len(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		// Keys travel in protobuf strings: they must be UTF-8.
		if k == "" || len(k) > auth.MaxKeyLen || !utf8.ValidString(k) {
			return fmt.Errorf("%w: a key is empty, not UTF-8 or longer than %d bytes", ErrInvalidArgument, auth.MaxKeyLen)
		}
	}
	var (
		servers []string
		err     error
	)
	start := time.Now()
	if lk == nil {
		servers, err = l.store.Servers(ctx, keys)
	} else {
		var off int
		if servers, off, err = lk.servers.do(ctx, keys); err == nil {
			servers = servers[off : off+len(keys)]
		}
	}
	l.m.pushLookup.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s := l.getScratch()
	defer l.putScratch(s)
	return l.publishGroups(ctx, s, op, keys, servers, msg)
}

// PushMids pushes msg with op to every online device of the users.
func (l *Logic) PushMids(ctx context.Context, op int32, mids []int64, msg []byte) error {
	return l.count(kindMids, l.pushMids(ctx, nil, op, mids, msg))
}

// pushMids looks the mids up through lk (nil: straight in the store).
func (l *Logic) pushMids(ctx context.Context, lk *pushLookups, op int32, mids []int64, msg []byte) error {
	if err := l.checkPush(op, msg); err != nil {
		return err
	}
	if err := l.checkTargets("mids", len(mids)); err != nil {
		return err
	}
	for _, m := range mids {
		if m < 0 {
			return fmt.Errorf("%w: negative mid", ErrInvalidArgument)
		}
	}
	var (
		devs map[int64][]session.Device
		err  error
	)
	start := time.Now()
	if lk == nil {
		devs, err = l.store.Devices(ctx, mids)
	} else {
		// A shared answer: read only. It may hold other pushes' mids, and
		// a mid asked by two of them twice (duplicate keys are dropped by
		// the grouping).
		devs, _, err = lk.devices.do(ctx, mids)
	}
	l.m.pushLookup.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s := l.getScratch()
	defer l.putScratch(s)
	s.keys, s.servers = s.keys[:0], s.servers[:0]
	// A mid given twice yields its keys twice: the grouping drops them.
	for _, m := range mids {
		for _, d := range devs[m] {
			s.keys = append(s.keys, d.Key)
			s.servers = append(s.servers, d.Server)
		}
	}
	return l.publishGroups(ctx, s, op, s.keys, s.servers, msg)
}

// publishGroups publishes one PUSH record per comet. With several comets
// the records are published concurrently (at most maxParallelPublish at a
// time). When one fails the error is returned; the others may have been
// published.
func (l *Logic) publishGroups(ctx context.Context, s *pushScratch, op int32, keys, servers []string, msg []byte) error {
	if offline := s.group(keys, servers); offline > 0 {
		l.m.pushMissed.Add(float64(offline))
	}
	m := &s.msg
	m.Type = pb.PushMsg_PUSH
	m.Operation = op
	m.Msg = msg
	if len(s.groups) == 1 {
		g := s.groups[0]
		m.Server, m.Keys = g.server, s.flat[g.off:g.off+g.n]
		return l.publish(ctx, s, m, g.server, recordPush)
	}
	// Marshal every record into s.buf first: the slices are taken once
	// the buffer stops growing.
	s.buf = s.buf[:0]
	s.ends = s.ends[:0]
	for _, g := range s.groups {
		m.Server, m.Keys = g.server, s.flat[g.off:g.off+g.n]
		var err error
		if s.buf, err = (proto.MarshalOptions{}).MarshalAppend(s.buf, m); err != nil {
			return fmt.Errorf("logic: marshal push record: %w", err)
		}
		valueEnd := len(s.buf)
		s.buf = append(s.buf, g.server...)
		s.ends = append(s.ends, valueEnd, len(s.buf))
	}
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		sem   = make(chan struct{}, maxParallelPublish)
	)
	begin := time.Now()
	defer func() { l.m.pushPublish.Observe(time.Since(begin).Seconds()) }()
	start := 0
	for i := range s.groups {
		value, key := s.buf[start:s.ends[2*i]], s.buf[s.ends[2*i]:s.ends[2*i+1]]
		start = s.ends[2*i+1]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := l.producer.Publish(ctx, l.cfg.Push.Topic, key, value); err != nil {
				errMu.Lock()
				if first == nil {
					first = fmt.Errorf("%w: publish: %w", ErrUnavailable, err)
				}
				errMu.Unlock()
				return
			}
			l.m.pushRecords.WithLabelValues(recordPush).Inc()
		})
	}
	wg.Wait()
	return first
}

// publish marshals m into s.buf and publishes it with the record key.
func (l *Logic) publish(ctx context.Context, s *pushScratch, m *pb.PushMsg, key, typ string) error {
	var err error
	s.buf, err = proto.MarshalOptions{}.MarshalAppend(s.buf[:0], m)
	if err != nil {
		return fmt.Errorf("logic: marshal push record: %w", err)
	}
	n := len(s.buf)
	s.buf = append(s.buf, key...)
	var rk []byte
	if key != "" {
		rk = s.buf[n:]
	}
	begin := time.Now()
	err = l.producer.Publish(ctx, l.cfg.Push.Topic, rk, s.buf[:n])
	l.m.pushPublish.Observe(time.Since(begin).Seconds())
	if err != nil {
		return fmt.Errorf("%w: publish: %w", ErrUnavailable, err)
	}
	l.m.pushRecords.WithLabelValues(typ).Inc()
	return nil
}

// PushRoom pushes msg with op to everyone in the room typ://room.
func (l *Logic) PushRoom(ctx context.Context, op int32, typ, room string, msg []byte) error {
	return l.count(kindRoom, l.pushRoom(ctx, op, typ, room, msg))
}

func (l *Logic) pushRoom(ctx context.Context, op int32, typ, room string, msg []byte) error {
	if err := l.checkPush(op, msg); err != nil {
		return err
	}
	if err := checkRoomType(typ); err != nil {
		return err
	}
	key := roomKey(typ, room)
	if room == "" || len(key) > auth.MaxRoomIDLen || !utf8.ValidString(room) {
		return fmt.Errorf("%w: room must be non-empty UTF-8 and the room id at most %d bytes", ErrInvalidArgument, auth.MaxRoomIDLen)
	}
	s := l.getScratch()
	defer l.putScratch(s)
	m := &s.msg
	m.Type = pb.PushMsg_ROOM
	m.Operation = op
	m.Room = key
	m.Msg = msg
	return l.publish(ctx, s, m, key, recordRoom)
}

// PushAll pushes msg with op to every connection; speed is the broadcast
// rate hint (goim: pushes per second per comet, 0 = unlimited).
func (l *Logic) PushAll(ctx context.Context, op, speed int32, msg []byte) error {
	return l.count(kindAll, l.pushAll(ctx, op, speed, msg))
}

func (l *Logic) pushAll(ctx context.Context, op, speed int32, msg []byte) error {
	if err := l.checkPush(op, msg); err != nil {
		return err
	}
	if speed < 0 {
		return fmt.Errorf("%w: negative speed", ErrInvalidArgument)
	}
	s := l.getScratch()
	defer l.putScratch(s)
	m := &s.msg
	m.Type = pb.PushMsg_BROADCAST
	m.Operation = op
	m.Speed = speed
	m.Msg = msg
	// Keyed by op (like goim): broadcasts of one op share a partition, so
	// they reach the comets in the order they were pushed. Unkeyed, each
	// went to a partition of its own and could overtake the one before.
	return l.publish(ctx, s, m, strconv.FormatInt(int64(op), 10), recordBroadcast)
}
