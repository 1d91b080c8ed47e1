package im

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultSeqTTL is how long an unused seq counter lives in Redis. An expired
// counter is re-created past the stored maximum, so the TTL only bounds
// memory; it never lets seq go backwards.
const DefaultSeqTTL = 7 * 24 * time.Hour

// Both scripts touch a single key, so they work unchanged on Redis Cluster.
var (
	seqIncrScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v`)
	seqInitIncrScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur == nil or cur < tonumber(ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v`)
)

// RedisSeqCounter keeps seq counters in Redis under "<prefix>seq:{<conv>}".
type RedisSeqCounter struct {
	rdb    redis.UniversalClient
	prefix string
	ttlMs  int64
}

// NewRedisSeqCounter returns a counter using rdb. ttl 0 means DefaultSeqTTL.
func NewRedisSeqCounter(rdb redis.UniversalClient, prefix string, ttl time.Duration) (*RedisSeqCounter, error) {
	if rdb == nil {
		return nil, errors.New("im: redis seq counter needs a client")
	}
	if ttl <= 0 {
		ttl = DefaultSeqTTL
	}
	return &RedisSeqCounter{rdb: rdb, prefix: prefix, ttlMs: ttl.Milliseconds()}, nil
}

func (c *RedisSeqCounter) key(convID string) string {
	return c.prefix + "seq:{" + convID + "}"
}

// Incr implements SeqCounter.
func (c *RedisSeqCounter) Incr(ctx context.Context, convID string) (int64, bool, error) {
	v, err := seqIncrScript.Run(ctx, c.rdb, []string{c.key(convID)}, c.ttlMs).Int64()
	if err != nil {
		return 0, false, err
	}
	if v < 0 {
		return 0, false, nil
	}
	return v, true, nil
}

// InitIncr implements SeqCounter.
func (c *RedisSeqCounter) InitIncr(ctx context.Context, convID string, floor int64) (int64, error) {
	return seqInitIncrScript.Run(ctx, c.rdb, []string{c.key(convID)}, c.ttlMs, floor).Int64()
}
