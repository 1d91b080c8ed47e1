package members

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/backoff"
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

// Bounds of the pause after a failed subscription (Redis down), before
// subscribing again.
const (
	eventsRetryMin = 100 * time.Millisecond
	eventsRetryMax = 2 * time.Second
)

// eventsPing: a subscription silent this long is pinged; silent for as
// long again, it is taken for dead (a half-open connection never fails a
// read). Until then the member caches' TTL bounds what is missed.
const eventsPing = 15 * time.Second

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

// Run applies the published changes to caches until ctx ends. Any error
// of the subscription (the connection lost, or an error reply such as a
// missing ACL permission) drops every cached list and subscribes again
// after a pause; a connection silent for eventsPing is pinged, and one that
// stays silent through the next eventsPing is taken for dead.
func (e *RedisEvents) Run(ctx context.Context, caches ...*Cache) error {
	var (
		mu sync.Mutex // ps: replaced by the loop, closed by the AfterFunc
		ps = e.rdb.Subscribe(ctx, e.channel)
	)
	closePS := func() {
		mu.Lock()
		defer mu.Unlock()
		_ = ps.Close()
	}
	stop := context.AfterFunc(ctx, closePS) // unblocks a Receive
	defer func() {
		stop()
		closePS() // the current one (a resubscription may follow the AfterFunc)
	}()
	all := func() {
		for _, c := range caches {
			c.InvalidateAll()
		}
	}
	bo, pinged := backoff.New(eventsRetryMin, eventsRetryMax), false
	for {
		mu.Lock()
		cur := ps
		mu.Unlock()
		msg, err := cur.ReceiveTimeout(ctx, eventsPing)
		if ctx.Err() != nil {
			return nil
		}
		if isTimeout(err) && !pinged {
			pinged = true
			if err = cur.Ping(ctx); err == nil {
				continue // the PONG (or any message) comes through Receive
			}
		}
		if err != nil {
			all()
			e.events.WithLabelValues(eventLost).Inc()
			e.log.Warn("member change events: subscription lost; subscribing again", "err", err)
			if !bo.Wait(ctx) {
				return nil
			}
			pinged = false
			mu.Lock()
			_ = ps.Close()
			ps = e.rdb.Subscribe(ctx, e.channel) // its confirmation drops every list again
			mu.Unlock()
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				all() // changes before this subscription were not seen
				e.events.WithLabelValues(eventSubscribed).Inc()
				bo.Reset()
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

// isTimeout reports whether err is a read that timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
