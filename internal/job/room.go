package job

import (
	"sync"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/mq"
)

// roomBatcher collects each room's pushes for a short window and sends
// them as one BroadcastRoom: a single push as it is, several as one OpRaw
// proto whose body is their frames packed back to back. A room has state
// only while a batch is open: flushing removes it, so idle rooms cost
// nothing (no timer, no goroutine).
//
// Batches are handed to the comets with r.mu held, so one room's batches
// reach each comet's queue in order. Each push carries the mq.Ack of its
// record; they are all acknowledged once the batch was handed over (so the
// queue commits a room push only after it reached the comets' queues).
type roomBatcher struct {
	window   time.Duration
	max      int
	maxBytes int
	deliver  func(room string, p *protocol.Proto, n int) // hands a batch to every comet

	mu      sync.Mutex
	rooms   map[string]*roomBatch
	closed  bool
	timers  sync.WaitGroup // one per armed timer; done when it is stopped or has run
	ackBufs [][]mq.Ack     // acks slices of flushed batches, for reuse
}

type roomBatch struct {
	room     string
	n        int
	firstOp  int32
	firstMsg []byte
	firstAck mq.Ack
	packed   []byte   // frames of all n pushes, once n > 1
	acks     []mq.Ack // acks of all n pushes, once n > 1
	timer    *time.Timer
}

func newRoomBatcher(window time.Duration, max, maxBytes int, deliver func(string, *protocol.Proto, int)) *roomBatcher {
	return &roomBatcher{window: window, max: max, maxBytes: maxBytes, deliver: deliver, rooms: make(map[string]*roomBatch)}
}

// add queues one push to room; ack is acknowledged once the push was
// handed to the comets. After close it is delivered at once.
func (r *roomBatcher) add(room string, op int32, msg []byte, ack mq.Ack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.max <= 1 {
		r.flush(&roomBatch{room: room, n: 1, firstOp: op, firstMsg: msg, firstAck: ack})
		return
	}
	b := r.rooms[room]
	if b == nil {
		b = &roomBatch{room: room, n: 1, firstOp: op, firstMsg: msg, firstAck: ack}
		r.rooms[room] = b
		r.timers.Add(1)
		b.timer = time.AfterFunc(r.window, func() { r.expire(b) })
		return
	}
	if b.n == 1 {
		// Size for a full batch of pushes like the first, so a batch of
		// similar pushes is packed with one allocation.
		est := min(r.max*protocol.FrameSize(len(b.firstMsg)), r.maxBytes+protocol.FrameSize(len(msg)))
		est = max(est, protocol.FrameSize(len(b.firstMsg))+protocol.FrameSize(len(msg)))
		b.packed = make([]byte, 0, est)
		b.packed = protocol.AppendFrame(b.packed, protocol.Version, b.firstOp, 0, b.firstMsg)
		b.acks = append(r.ackBuf(), b.firstAck)
	}
	b.packed = protocol.AppendFrame(b.packed, protocol.Version, op, 0, msg)
	b.acks = append(b.acks, ack)
	b.n++
	if b.n >= r.max || len(b.packed) >= r.maxBytes {
		r.detach(b)
		r.flush(b)
	}
}

// detach removes b from the open batches; r.mu held.
func (r *roomBatcher) detach(b *roomBatch) {
	delete(r.rooms, b.room)
	if b.timer.Stop() {
		r.timers.Done()
	}
}

// expire is b's timer: flush b unless it was flushed already.
func (r *roomBatcher) expire(b *roomBatch) {
	defer r.timers.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rooms[b.room] != b {
		return
	}
	delete(r.rooms, b.room)
	r.flush(b)
}

// ackBuf returns an empty acks slice, reused if one is free; r.mu held.
func (r *roomBatcher) ackBuf() []mq.Ack {
	if n := len(r.ackBufs); n > 0 {
		buf := r.ackBufs[n-1]
		r.ackBufs = r.ackBufs[:n-1]
		return buf
	}
	return make([]mq.Ack, 0, min(r.max, maxReusedAckCap))
}

// flush hands b to the comets, then acknowledges its records; r.mu held.
func (r *roomBatcher) flush(b *roomBatch) {
	p := &protocol.Proto{Ver: protocol.Version, Op: b.firstOp, Body: b.firstMsg}
	if b.n > 1 {
		p.Op, p.Body = protocol.OpRaw, b.packed
	}
	r.deliver(b.room, p, b.n)
	if b.n == 1 {
		b.firstAck.Done()
		return
	}
	for _, a := range b.acks {
		a.Done()
	}
	if cap(b.acks) <= maxReusedAckCap && len(r.ackBufs) < maxFreeAckBufs {
		clear(b.acks)
		r.ackBufs = append(r.ackBufs, b.acks[:0])
	}
	b.acks = nil
}

// Acks slices kept for reuse: at most maxFreeAckBufs of them, each of at
// most maxReusedAckCap acks (a larger one is left to the collector).
const (
	maxFreeAckBufs  = 64
	maxReusedAckCap = 1024
)

// close flushes every open batch and waits for running timers; later adds
// are delivered unbatched.
func (r *roomBatcher) close() {
	r.mu.Lock()
	r.closed = true
	for _, b := range r.rooms {
		r.detach(b)
		r.flush(b)
	}
	r.mu.Unlock()
	r.timers.Wait()
}

// open is the number of rooms with an open batch.
func (r *roomBatcher) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rooms)
}
