package comet

import (
	"sync"
	"sync/atomic"
)

// room is a bucket's share of a room: the members of the room that live in
// this bucket, as an intrusive list through conn.rprev/rnext.
type room struct {
	id   string
	head *conn
	n    int32
	// online is the cluster-wide count from the last RenewOnline; 0 until
	// then, when the local count is used.
	online atomic.Int32
}

type roomJob struct {
	room  string
	frame []byte
}

// bucket is one shard of the connections: key→conn and room→room maps
// under one lock, and room-broadcast workers.
type bucket struct {
	srv    *Server
	mu     sync.RWMutex
	conns  map[string]*conn
	rooms  map[string]*room
	queues []chan roomJob
}

func newBucket(s *Server) *bucket {
	b := &bucket{
		srv:    s,
		conns:  make(map[string]*conn),
		rooms:  make(map[string]*room),
		queues: make([]chan roomJob, s.cfg.RoomWorkers),
	}
	for i := range b.queues {
		b.queues[i] = make(chan roomJob, s.cfg.RoomQueue)
	}
	return b
}

// fnv32a hashes s without allocating.
func fnv32a(s string) uint32 {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= prime32
	}
	return h
}

// put registers c under its key and joins roomID. A connection already
// holding the key is returned; the caller kicks it.
func (b *bucket) put(c *conn, roomID string, authReply []byte) (old *conn, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv.draining.Load() {
		return nil, ErrDraining
	}
	// Lock order: bucket, then connection. The AuthReply is queued here,
	// under the bucket lock: before any push by key or room can find the
	// connection (so it is the first frame), and not before it can (a
	// client answered may push at once, and must be findable). A
	// connection that started closing (its handshake expired) is not
	// registered: its close path would not find it, and it would displace
	// a live one.
	if authReply != nil {
		if c.enqueue(authReply) != nil {
			return nil, ErrClosed
		}
	} else if c.isClosing() {
		return nil, ErrClosed
	}
	old = b.conns[c.key]
	b.conns[c.key] = c
	if old != nil {
		b.leaveLocked(old)
	}
	if roomID != "" {
		b.joinLocked(c, roomID)
	}
	return old, nil
}

// del unregisters c if it still owns its key and takes it out of its room.
func (b *bucket) del(c *conn) {
	b.mu.Lock()
	if b.conns[c.key] == c {
		delete(b.conns, c.key)
	}
	b.leaveLocked(c)
	b.mu.Unlock()
}

func (b *bucket) get(key string) *conn {
	b.mu.RLock()
	c := b.conns[key]
	b.mu.RUnlock()
	return c
}

func (b *bucket) changeRoom(c *conn, roomID string) {
	b.mu.Lock()
	b.leaveLocked(c)
	if roomID != "" {
		b.joinLocked(c, roomID)
	}
	b.mu.Unlock()
}

func (b *bucket) joinLocked(c *conn, roomID string) {
	r := b.rooms[roomID]
	if r == nil {
		r = &room{id: roomID}
		b.rooms[roomID] = r
	}
	c.room = r
	c.rprev = nil
	c.rnext = r.head
	if r.head != nil {
		r.head.rprev = c
	}
	r.head = c
	r.n++
}

func (b *bucket) leaveLocked(c *conn) {
	r := c.room
	if r == nil {
		return
	}
	if c.rprev != nil {
		c.rprev.rnext = c.rnext
	} else {
		r.head = c.rnext
	}
	if c.rnext != nil {
		c.rnext.rprev = c.rprev
	}
	c.room, c.rprev, c.rnext = nil, nil, nil
	r.n--
	if r.n == 0 {
		delete(b.rooms, r.id)
	}
}

// roomOnline is the count a HeartbeatReply carries for c.
func (b *bucket) roomOnline(c *conn) int32 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	r := c.room
	if r == nil {
		return 0
	}
	if n := r.online.Load(); n > 0 {
		return n
	}
	return r.n
}

func (b *bucket) hasRoom(id string) bool {
	b.mu.RLock()
	_, ok := b.rooms[id]
	b.mu.RUnlock()
	return ok
}

// queueRoom hands a room broadcast to the room's worker without blocking.
func (b *bucket) queueRoom(id string, frame []byte) error {
	q := b.queues[fnv32a(id)%uint32(len(b.queues))]
	select {
	case q <- roomJob{room: id, frame: frame}:
		return nil
	default:
		return ErrRoomQueueFull
	}
}

// roomWorker writes room broadcasts until done is closed.
func (b *bucket) roomWorker(q chan roomJob, done <-chan struct{}) {
	defer b.srv.wg.Done()
	for {
		select {
		case <-done:
			return
		case j := <-q:
			b.deliverRoom(j.room, j.frame)
		}
	}
}

func (b *bucket) deliverRoom(id string, frame []byte) int {
	n := 0
	b.mu.RLock()
	if r := b.rooms[id]; r != nil {
		for c := r.head; c != nil; c = c.rnext {
			if c.enqueue(frame) == nil {
				n++
			}
		}
	}
	b.mu.RUnlock()
	b.srv.m.roomMsgs.Add(float64(n))
	return n
}

// snapshot appends the bucket's connections to dst.
func (b *bucket) snapshot(dst []*conn) []*conn {
	b.mu.RLock()
	for _, c := range b.conns {
		dst = append(dst, c)
	}
	b.mu.RUnlock()
	return dst
}

// roomCounts adds the bucket's room member counts to m.
func (b *bucket) roomCounts(m map[string]int32) {
	b.mu.RLock()
	for id, r := range b.rooms {
		m[id] += r.n
	}
	b.mu.RUnlock()
}

// setOnline stores cluster-wide counts (falling back to local ones).
func (b *bucket) setOnline(all, local map[string]int32) {
	b.mu.RLock()
	for id, r := range b.rooms {
		n, ok := all[id]
		if !ok {
			n = local[id]
		}
		r.online.Store(n)
	}
	b.mu.RUnlock()
}
