package members

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/promreg"
)

// eventsChannel is the Redis pub/sub channel of member changes, after the
// key prefix.
const eventsChannel = "member-changes"

// What hubuim_member_events_total counts (its event label).
const (
	eventPublished     = "published"
	eventPublishFailed = "publish_failed"
	eventReceived      = "received"
	eventSubscribed    = "subscribed"        // every cached list dropped
	eventLost          = "subscription_lost" // every cached list dropped
)

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
	events  *prometheus.CounterVec
}

// NewRedisEvents returns the member change events of the processes sharing
// rdb and the key prefix (their Redis prefix, e.g. "hubuim:"), counted in
// hubuim_member_events_total on reg (nil: not registered; registered
// already: shared).
func NewRedisEvents(rdb redis.UniversalClient, prefix string, log *slog.Logger, reg prometheus.Registerer) (*RedisEvents, error) {
	if log == nil {
		log = slog.Default()
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hubuim_member_events_total",
		Help: "Group membership change events between processes: published, publish_failed, received, subscribed and subscription_lost (both drop every cached member list).",
	}, []string{"event"})
	if reg != nil {
		var err error
		if events, err = promreg.Shared(reg, events); err != nil {
			return nil, err
		}
	}
	return &RedisEvents{rdb: rdb, channel: prefix + eventsChannel, log: log, events: events}, nil
}

// Publish tells every subscribed process that the members of groupID
// changed. Call it after the store change.
func (e *RedisEvents) Publish(ctx context.Context, groupID int64) error {
	err := e.rdb.Publish(ctx, e.channel, strconv.FormatInt(groupID, 10)).Err()
	if err != nil {
		e.events.WithLabelValues(eventPublishFailed).Inc()
		return err
	}
	e.events.WithLabelValues(eventPublished).Inc()
	return nil
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
			e.events.WithLabelValues(eventLost).Inc()
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
				e.events.WithLabelValues(eventSubscribed).Inc()
				pause = eventsRetryMin
			}
		case *redis.Message:
			id, err := strconv.ParseInt(m.Payload, 10, 64)
			if err != nil {
				e.log.Warn("member change events: bad group id", "payload", m.Payload)
				continue
			}
			e.events.WithLabelValues(eventReceived).Inc()
			for _, c := range caches {
				c.Invalidate(id)
			}
		}
	}
}
