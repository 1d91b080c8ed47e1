package job

import (
	"sync"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// roomBatcher collects each room's pushes for a short window and sends
// them as one BroadcastRoom: a single push as it is, several as one OpRaw
// proto whose body is their frames packed back to back. A room has state
// only while a batch is open: flushing removes it, so idle rooms cost
// nothing (no timer, no goroutine).
//
// Batches are handed to the comets with r.mu held, so one room's batches
// reach each comet's queue in order.
type roomBatcher struct {
	window   time.Duration
	max      int
	maxBytes int
	deliver  func(room string, p *protocol.Proto, n int) // hands a batch to every comet

	mu     sync.Mutex
	rooms  map[string]*roomBatch
	closed bool
	timers sync.WaitGroup // one per armed timer; done when it is stopped or has run
}

type roomBatch struct {
	room     string
	n        int
	firstOp  int32
	firstMsg []byte
	packed   []byte // frames of all n pushes, once n > 1
	timer    *time.Timer
}

func newRoomBatcher(window time.Duration, max, maxBytes int, deliver func(string, *protocol.Proto, int)) *roomBatcher {
	return &roomBatcher{window: window, max: max, maxBytes: maxBytes, deliver: deliver, rooms: make(map[string]*roomBatch)}
}

// add queues one push to room. After close it is delivered at once.
func (r *roomBatcher) add(room string, op int32, msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.max <= 1 {
		r.flush(&roomBatch{room: room, n: 1, firstOp: op, firstMsg: msg})
		return
	}
	b := r.rooms[room]
	if b == nil {
		b = &roomBatch{room: room, n: 1, firstOp: op, firstMsg: msg}
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
	}
	b.packed = protocol.AppendFrame(b.packed, protocol.Version, op, 0, msg)
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

// flush hands b to the comets; r.mu held.
func (r *roomBatcher) flush(b *roomBatch) {
	p := &protocol.Proto{Ver: protocol.Version, Op: b.firstOp, Body: b.firstMsg}
	if b.n > 1 {
		p.Op, p.Body = protocol.OpRaw, b.packed
	}
	r.deliver(b.room, p, b.n)
}

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
