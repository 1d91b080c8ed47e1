package im

import (
	"context"
	"fmt"
	"log/slog"
)

// sendClaim is the outcome of claiming a send: the dedup state and, when
// the send was claimed, its seq; when it was sent before, its ACK.
type sendClaim struct {
	state DedupState
	ack   []byte // DedupDone: the recorded ACK
	seq   int64  // DedupClaimed: the allocated seq
}

// sendClaimer claims (sender, client message id) for a new send and
// allocates the next seq of its conversation in the same step, then
// records the ACK of the send (finish) or releases the claim (abort).
// A seq is allocated only when the send is claimed.
type sendClaimer interface {
	claimNext(ctx context.Context, sender int64, clientMsgID, convID string) (sendClaim, error)
	// finish records ack for resends. It may return before the ACK is
	// recorded: until then a resend finds the claim in flight (and the
	// store's (sender, client_msg_id) uniqueness stays the backstop).
	// Failures are logged, not returned: the message is stored and ACKed.
	finish(ctx context.Context, sender int64, clientMsgID, convID string, ack []byte)
	abort(ctx context.Context, sender int64, clientMsgID, convID string) error
}

// newSendClaimer pairs the dedup store with the seq counter: a RedisDedup
// and a RedisSeqCounter on the same client are served by one script per
// send, pipelined with the concurrent sends; any other pair by two calls.
func newSendClaimer(dedup DedupStore, seq *SeqAllocator, pipelines, maxBatch int, log *slog.Logger) sendClaimer {
	if d, ok := dedup.(*RedisDedup); ok {
		if c, ok := seq.counter.(*RedisSeqCounter); ok && d.rdb == c.rdb {
			return newRedisClaimer(d, c, seq, pipelines, maxBatch, log)
		}
	}
	return &splitClaimer{dedup: dedup, seq: seq, log: log}
}

// splitClaimer claims through the DedupStore, then allocates through the
// SeqAllocator (the memory implementations, and any unpaired store).
type splitClaimer struct {
	dedup DedupStore
	seq   *SeqAllocator
	log   *slog.Logger
}

func (c *splitClaimer) claimNext(ctx context.Context, sender int64, id, convID string) (sendClaim, error) {
	ack, state, err := c.dedup.Claim(ctx, sender, id)
	if err != nil {
		return sendClaim{}, fmt.Errorf("dedup claim: %w", err)
	}
	if state != DedupClaimed {
		return sendClaim{state: state, ack: ack}, nil
	}
	seq, err := c.seq.Next(ctx, convID)
	if err != nil {
		c.releaseAfter(ctx, sender, id)
		return sendClaim{}, err
	}
	return sendClaim{state: DedupClaimed, seq: seq}, nil
}

func (c *splitClaimer) releaseAfter(ctx context.Context, sender int64, id string) {
	if err := c.dedup.Abort(ctx, sender, id); err != nil {
		c.log.Warn("im: release dedup claim", "err", err)
	}
}

func (c *splitClaimer) finish(ctx context.Context, sender int64, id, _ string, ack []byte) {
	if err := c.dedup.Finish(ctx, sender, id, ack); err != nil {
		// The store's (sender, client_msg_id) uniqueness still catches a
		// resend; only the fast path is lost.
		c.log.Warn("im: record dedup ack", "err", err)
	}
}

func (c *splitClaimer) abort(ctx context.Context, sender int64, id, _ string) error {
	return c.dedup.Abort(ctx, sender, id)
}
