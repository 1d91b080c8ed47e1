package im

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// An empty value marks a claim in flight; a non-empty one is the ACK.
var dedupClaimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], '', 'PX', ARGV[1])
return false`)

// Abort deletes only a claim, never a recorded ACK.
var dedupAbortScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == '' then return redis.call('DEL', KEYS[1]) end
return 0`)

// RedisDedup keeps dedup entries under "<prefix>dedup:{<sender>}:<id>".
type RedisDedup struct {
	rdb      redis.UniversalClient
	prefix   string
	window   time.Duration
	claimTTL time.Duration
}

// RedisDedupConfig configures RedisDedup; zero values are defaults.
type RedisDedupConfig struct {
	Prefix   string
	Window   time.Duration // default DefaultDedupWindow
	ClaimTTL time.Duration // default DefaultDedupClaimTTL
}

// NewRedisDedup returns a Redis-backed DedupStore.
func NewRedisDedup(rdb redis.UniversalClient, cfg RedisDedupConfig) (*RedisDedup, error) {
	if rdb == nil {
		return nil, errors.New("im: redis dedup needs a client")
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultDedupWindow
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = DefaultDedupClaimTTL
	}
	return &RedisDedup{rdb: rdb, prefix: cfg.Prefix, window: cfg.Window, claimTTL: cfg.ClaimTTL}, nil
}

func (d *RedisDedup) key(sender int64, id string) string {
	return d.prefix + "dedup:{" + strconv.FormatInt(sender, 10) + "}:" + id
}

// Claim implements DedupStore.
func (d *RedisDedup) Claim(ctx context.Context, sender int64, id string) ([]byte, DedupState, error) {
	v, err := dedupClaimScript.Run(ctx, d.rdb, []string{d.key(sender, id)}, d.claimTTL.Milliseconds()).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, DedupClaimed, nil
	case err != nil:
		return nil, 0, err
	case v == "":
		return nil, DedupInFlight, nil
	default:
		return []byte(v), DedupDone, nil
	}
}

// Finish implements DedupStore.
func (d *RedisDedup) Finish(ctx context.Context, sender int64, id string, ack []byte) error {
	return d.rdb.Set(ctx, d.key(sender, id), ack, d.window).Err()
}

// Abort implements DedupStore.
func (d *RedisDedup) Abort(ctx context.Context, sender int64, id string) error {
	return dedupAbortScript.Run(ctx, d.rdb, []string{d.key(sender, id)}).Err()
}
