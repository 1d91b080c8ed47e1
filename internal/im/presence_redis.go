package im

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisPresence keeps subscriptions in a sorted set per target,
// "<prefix>presence:{<target>}", scored by expiry (unix ms), so expired
// subscriptions are dropped on read and the key itself expires with the
// last one. One key per call: Redis Cluster works unchanged.
type RedisPresence struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisPresence returns a Redis-backed PresenceStore.
func NewRedisPresence(rdb redis.UniversalClient, prefix string) (*RedisPresence, error) {
	if rdb == nil {
		return nil, errors.New("im: redis presence needs a client")
	}
	return &RedisPresence{rdb: rdb, prefix: prefix}, nil
}

func (r *RedisPresence) key(target int64) string {
	return r.prefix + "presence:{" + strconv.FormatInt(target, 10) + "}"
}

// Subscribe implements PresenceStore.
func (r *RedisPresence) Subscribe(ctx context.Context, sub int64, targets []int64, ttl time.Duration) error {
	exp := time.Now().Add(ttl)
	member := strconv.FormatInt(sub, 10)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range targets {
			k := r.key(t)
			p.ZAdd(ctx, k, redis.Z{Score: float64(exp.UnixMilli()), Member: member})
			p.PExpireAt(ctx, k, exp)
		}
		return nil
	})
	return err
}

// Unsubscribe implements PresenceStore.
func (r *RedisPresence) Unsubscribe(ctx context.Context, sub int64, targets []int64) error {
	member := strconv.FormatInt(sub, 10)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range targets {
			p.ZRem(ctx, r.key(t), member)
		}
		return nil
	})
	return err
}

// Subscribers implements PresenceStore.
func (r *RedisPresence) Subscribers(ctx context.Context, target int64) ([]int64, error) {
	k := r.key(target)
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var members *redis.StringSliceCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, k, "-inf", now)
		members = p.ZRange(ctx, k, 0, -1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]int64, 0, len(members.Val()))
	for _, m := range members.Val() {
		if id, err := strconv.ParseInt(m, 10, 64); err == nil {
			out = append(out, id)
		}
	}
	return out, nil
}
