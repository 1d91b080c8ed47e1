package session

import (
	"context"
	"time"
)

// HeartbeatUser runs the second half of Heartbeat alone (the user entry),
// for the conformance case of a Remove between the two halves.
func (r *Redis) HeartbeatUser(ctx context.Context, s Session, ttl time.Duration) (HeartbeatResult, error) {
	return r.heartbeatUser(ctx, s, ttl)
}
