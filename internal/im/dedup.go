package im

import (
	"context"
	"time"
)

// Dedup windows.
const (
	// DefaultDedupWindow is how long a sent message's ACK is remembered for
	// resends of the same client message id.
	DefaultDedupWindow = 24 * time.Hour
	// DefaultDedupClaimTTL bounds how long a claim of an in-flight send
	// blocks resends when its logic replica dies before finishing.
	DefaultDedupClaimTTL = 10 * time.Second
)

// DedupState is the outcome of claiming a client message id.
type DedupState int

const (
	// DedupClaimed: the caller owns the send and must Finish or Abort it.
	DedupClaimed DedupState = iota + 1
	// DedupDone: the message was sent before; Claim returned its ACK.
	DedupDone
	// DedupInFlight: another request for the same id is being processed;
	// the client should retry later.
	DedupInFlight
)

// DedupStore remembers (sender, client message id) → ACK.
type DedupStore interface {
	// Claim takes the id for a new send, or returns the recorded ACK.
	Claim(ctx context.Context, sender int64, clientMsgID string) (ack []byte, state DedupState, err error)
	// Finish records the ACK of a claimed id for the dedup window.
	Finish(ctx context.Context, sender int64, clientMsgID string, ack []byte) error
	// Abort releases a claim whose send failed, so a resend can retry.
	Abort(ctx context.Context, sender int64, clientMsgID string) error
}
