package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Defaults of the Redis send claimer (Config.ClaimPipelines).
const (
	// DefaultClaimPipelines bounds the Redis pipelines of send claims and
	// dedup finishes in flight at once; sends arriving meanwhile queue and
	// go in the next pipeline.
	DefaultClaimPipelines = 2
	// claimMaxBatch bounds the commands of one pipeline.
	claimMaxBatch = 256
)

// claimNextScript claims a client message id and allocates the next seq of
// the conversation in one round trip. KEYS[1] is the dedup key, KEYS[2] the
// seq counter; both carry the conversation as hash tag, so they are in one
// slot of a Redis Cluster. ARGV[1] is the claim TTL, ARGV[2] the counter
// TTL (ms). It returns {0, v}: claimed before, v is empty while that send is
// in flight, else its ACK; {1, seq}: claimed, seq allocated; {1, -1}:
// claimed, the counter is missing (re-created by the caller past the
// stored maximum). Nothing is allocated unless the id is claimed.
var claimNextScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return {0, v} end
redis.call('SET', KEYS[1], '', 'PX', ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return {1, -1} end
local s = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, s}`)

// Replies of claimNextScript.
const (
	claimReplyTaken   = 0
	claimReplyClaimed = 1
	counterMissing    = -1
)

// errClaimReply: claimNextScript answered something else than it returns.
var errClaimReply = errors.New("im: unexpected reply of the claim script")

// redisClaimer serves the send claims and finishes of a RedisDedup and a
// RedisSeqCounter sharing one client. Dedup entries live under
// "<prefix>dedup:{<conv>}:<sender>:<id>", next to the counter
// "<prefix>seq:{<conv>}" (RedisDedup's own Claim keys by sender only).
//
// Concurrent claims and finishes go to Redis in shared pipelines, leader
// and followers like the appender: no goroutine and no timer; at most
// pipelines callers lead at once, the others queue. A leader pipelines
// every queued finish first, then its own claim and the queued ones, hands
// the results over and passes its leadership to the first queued claim.
// A finish does not wait: it is queued behind the pipelines in flight, or
// sent at once when there are none. In a pipeline, finishes precede
// claims, so a resend in the same pipeline already finds its ACK.
type redisClaimer struct {
	rdb       redis.UniversalClient
	dedup     *RedisDedup
	counter   *RedisSeqCounter
	alloc     *SeqAllocator
	log       *slog.Logger
	pipelines int
	maxBatch  int
	claimTTL  int64 // ms

	mu       sync.Mutex
	queue    []*claimOp // claims and finishes, in arrival order
	waiting  int        // claims in queue
	inflight int        // leaderships held, <= pipelines

	ops     sync.Pool // *claimOp
	batches sync.Pool // *claimBatch
}

type claimOp struct {
	finish bool
	keys   [2]string // dedup key; seq key (claims)
	ack    []byte    // finish: the ACK to record
	res    sendClaim // claim: the outcome (seq counterMissing: re-create)
	err    error
	done   chan int // claims: sigDone or sigLead; buffered 1
}

// claimBatch is a leader's scratch space, reused.
type claimBatch struct {
	ops    []*claimOp
	claims []*redis.Cmd
	sets   []*redis.StatusCmd
}

func newRedisClaimer(d *RedisDedup, c *RedisSeqCounter, alloc *SeqAllocator, pipelines, maxBatch int, log *slog.Logger) *redisClaimer {
	r := &redisClaimer{
		rdb: d.rdb, dedup: d, counter: c, alloc: alloc, log: log,
		pipelines: pipelines, maxBatch: maxBatch, claimTTL: d.claimTTL.Milliseconds(),
	}
	r.ops.New = func() any { return &claimOp{done: make(chan int, 1)} }
	r.batches.New = func() any { return &claimBatch{ops: make([]*claimOp, 0, maxBatch)} }
	return r
}

func (r *redisClaimer) dedupKey(sender int64, id, convID string) string {
	return r.dedup.prefix + "dedup:{" + convID + "}:" + strconv.FormatInt(sender, 10) + ":" + id
}

func (r *redisClaimer) claimNext(ctx context.Context, sender int64, id, convID string) (sendClaim, error) {
	if err := ctx.Err(); err != nil {
		return sendClaim{}, err
	}
	op := r.ops.Get().(*claimOp)
	op.keys = [2]string{r.dedupKey(sender, id, convID), r.counter.key(convID)}
	r.mu.Lock()
	lead := r.inflight < r.pipelines
	if lead {
		r.inflight++
	} else {
		r.queue = append(r.queue, op)
		r.waiting++
	}
	r.mu.Unlock()
	if !lead {
		lead = <-op.done == sigLead // else the result is in
	}
	if lead {
		r.lead(ctx, op)
		<-op.done // sigDone
	}
	res, err := op.res, op.err
	*op = claimOp{done: op.done}
	r.ops.Put(op)
	if err != nil {
		return sendClaim{}, fmt.Errorf("dedup claim: %w", err)
	}
	if res.state == DedupClaimed && res.seq == counterMissing {
		seq, err := r.alloc.recreate(ctx, convID)
		if err != nil {
			if aerr := r.abort(ctx, sender, id, convID); aerr != nil {
				r.log.Warn("im: release dedup claim", "err", aerr)
			}
			return sendClaim{}, err
		}
		res.seq = seq
	}
	return res, nil
}

func (r *redisClaimer) finish(ctx context.Context, sender int64, id, convID string, ack []byte) {
	op := r.ops.Get().(*claimOp)
	op.finish = true
	op.keys[0] = r.dedupKey(sender, id, convID)
	op.ack = ack
	r.mu.Lock()
	if r.inflight > 0 {
		// A leader in flight sends it with its next pipeline, or its
		// successor does.
		r.queue = append(r.queue, op)
		r.mu.Unlock()
		return
	}
	r.inflight++
	r.mu.Unlock()
	r.lead(ctx, op)
}

func (r *redisClaimer) abort(ctx context.Context, sender int64, id, convID string) error {
	return dedupAbortScript.Run(ctx, r.rdb, []string{r.dedupKey(sender, id, convID)}).Err()
}

// lead pipelines own (nil once sent) with the head of the queue, then
// passes the leadership to the first queued claim; while only finishes are
// queued, it sends them too; then it gives the leadership up.
func (r *redisClaimer) lead(ctx context.Context, own *claimOp) {
	ctx = context.WithoutCancel(ctx) // followers' results must not depend on the leader's ctx
	b := r.batches.Get().(*claimBatch)
	for {
		b.ops = b.ops[:0]
		if own != nil {
			b.ops = append(b.ops, own)
			own = nil
		}
		r.mu.Lock()
		n := min(len(r.queue), r.maxBatch-len(b.ops))
		for _, op := range r.queue[:n] {
			if !op.finish {
				r.waiting--
			}
		}
		b.ops = append(b.ops, r.queue[:n]...)
		rest := copy(r.queue, r.queue[n:])
		clear(r.queue[rest:])
		r.queue = r.queue[:rest]
		r.mu.Unlock()

		r.exec(ctx, b)

		r.mu.Lock()
		if r.waiting > 0 {
			r.passLocked()
			r.mu.Unlock()
			break
		}
		if len(r.queue) == 0 {
			r.inflight--
			r.mu.Unlock()
			break
		}
		r.mu.Unlock() // only finishes are queued: send them
	}
	clear(b.ops[:cap(b.ops)])
	b.ops = b.ops[:0]
	r.batches.Put(b)
}

// passLocked hands the leadership to the first queued claim, which leaves
// the queue (the finishes queued before it stay at its head).
func (r *redisClaimer) passLocked() {
	for i, op := range r.queue {
		if op.finish {
			continue
		}
		copy(r.queue[i:], r.queue[i+1:])
		r.queue[len(r.queue)-1] = nil
		r.queue = r.queue[:len(r.queue)-1]
		r.waiting--
		op.done <- sigLead // the leadership moves; inflight unchanged
		return
	}
}

// exec sends b's finishes, then its claims, in one pipeline, and signals
// every claim with its outcome.
func (r *redisClaimer) exec(ctx context.Context, b *claimBatch) {
	pipe := r.rdb.Pipeline()
	b.sets, b.claims = b.sets[:0], b.claims[:0]
	for _, op := range b.ops {
		if op.finish {
			b.sets = append(b.sets, pipe.Set(ctx, op.keys[0], op.ack, r.dedup.window))
		}
	}
	for _, op := range b.ops {
		if !op.finish {
			b.claims = append(b.claims, claimNextScript.EvalSha(ctx, pipe, op.keys[:], r.claimTTL, r.counter.ttlMs))
		}
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var failed int
	var ferr error
	for _, c := range b.sets {
		if err := c.Err(); err != nil {
			failed, ferr = failed+1, err
		}
	}
	if failed > 0 {
		// The store's (sender, client_msg_id) uniqueness still catches a
		// resend; only the fast path is lost.
		r.log.Warn("im: record dedup acks", "failed", failed, "err", ferr)
	}
	i := 0
	for _, op := range b.ops {
		if op.finish {
			*op = claimOp{done: op.done}
			r.ops.Put(op)
			continue
		}
		cmd := b.claims[i]
		i++
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// The script cache was flushed (Redis restarted): EVAL loads it.
			cmd = claimNextScript.Run(ctx, r.rdb, op.keys[:], r.claimTTL, r.counter.ttlMs)
		}
		op.res, op.err = parseClaimReply(cmd)
		op.done <- sigDone
	}
	clear(b.sets)
	clear(b.claims)
}

func parseClaimReply(cmd *redis.Cmd) (sendClaim, error) {
	v, err := cmd.Slice()
	if err != nil {
		return sendClaim{}, err
	}
	if len(v) != 2 {
		return sendClaim{}, errClaimReply
	}
	kind, ok := v[0].(int64)
	if !ok {
		return sendClaim{}, errClaimReply
	}
	switch kind {
	case claimReplyTaken:
		s, ok := v[1].(string)
		switch {
		case !ok:
			return sendClaim{}, errClaimReply
		case s == "":
			return sendClaim{state: DedupInFlight}, nil
		default:
			return sendClaim{state: DedupDone, ack: []byte(s)}, nil
		}
	case claimReplyClaimed:
		seq, ok := v[1].(int64)
		if !ok || (seq <= 0 && seq != counterMissing) {
			return sendClaim{}, errClaimReply
		}
		return sendClaim{state: DedupClaimed, seq: seq}, nil
	default:
		return sendClaim{}, errClaimReply
	}
}
