package members

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// eventsChannel is the Redis pub/sub channel of member changes, after the
// key prefix.
const eventsChannel = "member-changes"

// Bounds of the pause after a failed subscription read (Redis down): the
// next read reconnects.
const (
	eventsRetryMin = 100 * time.Millisecond
	eventsRetryMax = 2 * time.Second
)

// RedisEvents carries "the members of group G changed" between processes
// over a Redis pub/sub channel, so that every logic replica and job drops
// its cached list of G at once instead of when the entry expires. Pub/sub
// delivers at most once: a subscriber that lost its connection drops all
// its entries when it subscribes again (it may have missed changes), and
// while Redis is unreachable Config.TTL stays the bound.
type RedisEvents struct {
	rdb     redis.UniversalClient
	channel string
	log     *slog.Logger
}

// NewRedisEvents returns the member change events of the processes sharing
// rdb and the key prefix (their Redis prefix, e.g. "hubuim:").
func NewRedisEvents(rdb redis.UniversalClient, prefix string, log *slog.Logger) *RedisEvents {
	if log == nil {
		log = slog.Default()
	}
	return &RedisEvents{rdb: rdb, channel: prefix + eventsChannel, log: log}
}

// Publish tells every subscribed process that the members of groupID
// changed. Call it after the store change.
func (e *RedisEvents) Publish(ctx context.Context, groupID int64) error {
	return e.rdb.Publish(ctx, e.channel, strconv.FormatInt(groupID, 10)).Err()
}

// Run applies the published changes to caches until ctx ends.
func (e *RedisEvents) Run(ctx context.Context, caches ...*Cache) error {
	ps := e.rdb.Subscribe(ctx, e.channel)
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() }) // unblocks Receive
	defer func() {
		if stop() {
			_ = ps.Close()
		}
	}()
	all := func() {
		for _, c := range caches {
			c.InvalidateAll()
		}
	}
	pause := eventsRetryMin
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The next Receive reconnects and subscribes again; changes
			// published meanwhile are lost.
			all()
			e.log.Warn("member change events: subscription lost", "err", err, "retry_in", pause)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
			pause = min(2*pause, eventsRetryMax)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				all() // changes before this subscription were not seen
				pause = eventsRetryMin
			}
		case *redis.Message:
			id, err := strconv.ParseInt(m.Payload, 10, 64)
			if err != nil {
				e.log.Warn("member change events: bad group id", "payload", m.Payload)
				continue
			}
			for _, c := range caches {
				c.Invalidate(id)
			}
		}
	}
}
