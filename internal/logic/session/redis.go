package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the default key prefix of the Redis store.
const DefaultPrefix = "hubuim:"

// sep separates the parts of a user-hash value (docs/redis-keys.md). Ids
// containing it are refused with ErrInvalid.
const sep = "\x00"

// Route hash fields.
const (
	fieldServer   = "s"
	fieldConn     = "c"
	fieldMid      = "m"
	fieldPlatform = "p"
)

// expiryShards is how many sorted sets the expiry index is split over (so
// that it spreads over a Redis Cluster's masters).
const expiryShards = 16

// RedisConfig configures the Redis store.
type RedisConfig struct {
	// Prefix is prepended to every key. Default DefaultPrefix ("hubuim:").
	// It must not contain '{' or '}' (they would break the hash tags).
	Prefix string `yaml:"prefix"`
}

// Redis is the Store of the distributed mode. Every script touches a single
// key, so it works unchanged on Redis Cluster; the ids inside keys are hash
// tags so that a key's slot depends on the id only (docs/redis-keys.md).
type Redis struct {
	c          redis.UniversalClient
	prefix     string
	now        func() time.Time
	sweepStart atomic.Uint32 // the index shard ExpiredUsers starts at, rotating
}

// sweepScratch is what ExpiredUsers found in one index shard.
type sweepScratch struct {
	key   string // index shard
	mid   int64
	score float64
}

// NewRedis returns a Redis store over client (a *redis.Client,
// *redis.ClusterClient or *redis.Ring). The client is not closed by the
// store.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) (*Redis, error) {
	if client == nil {
		return nil, errors.New("session: nil redis client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("session: prefix %q must not contain '{' or '}'", cfg.Prefix)
	}
	return &Redis{c: client, prefix: cfg.Prefix, now: time.Now}, nil
}

func (r *Redis) routeKey(key string) string { return r.prefix + "k:{" + key + "}" }
func (r *Redis) userKey(mid int64) string {
	return r.prefix + "u:{" + strconv.FormatInt(mid, 10) + "}"
}
func (r *Redis) roomsKey(server string) string { return r.prefix + "o:{" + server + "}" }
func (r *Redis) serversKey() string            { return r.prefix + "o:servers" }

// expiryKey is the expiry-index shard of a user: member mid, score the
// latest deadline (unix ms) of its devices.
func (r *Redis) expiryKey(mid int64) string {
	return r.expiryShardKey(int(uint64(mid) % expiryShards))
}
func (r *Redis) expiryShardKey(shard int) string {
	return r.prefix + "x:{" + strconv.Itoa(shard) + "}"
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// ownerTag is the owner part of a user-hash value.
func ownerTag(s Session) string { return s.Server + sep + s.ConnID + sep }

// userValue encodes a device entry: deadline(ms) NUL server NUL conn NUL platform.
func userValue(s Session, deadline time.Time) string {
	return strconv.FormatInt(deadline.UnixMilli(), 10) + sep + ownerTag(s) + s.Platform
}

// tombstoneValue encodes the tombstone of s's connection, kept until
// until: a userValue with the deadline negated.
func tombstoneValue(s Session, until time.Time) string {
	return "-" + userValue(s, until)
}

func parseUserValue(key, v string) (Device, int64, bool) {
	parts := strings.SplitN(v, sep, 4)
	if len(parts) != 4 {
		return Device{}, 0, false
	}
	dl, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return Device{}, 0, false
	}
	return Device{Key: key, Server: parts[1], ConnID: parts[2], Platform: parts[3]}, dl, true
}

func checkIDs(s Session) error {
	if strings.Contains(s.Server, sep) || strings.Contains(s.ConnID, sep) {
		return fmt.Errorf("%w: server or conn id contains NUL", ErrInvalid)
	}
	return nil
}

// luaVersion defines version() in a script: the Redis clock in
// microseconds. A user's hash lives on one node, so the versions of its
// first/last transitions (decided by these scripts) follow their order.
const luaVersion = `local function version()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
`

// replyState reads a {state, version} script reply.
func replyState(c *redis.Cmd) (state, version int64) {
	res, err := c.Slice()
	if err != nil || len(res) == 0 {
		return 0, 0
	}
	state, _ = res[0].(int64)
	if len(res) > 1 {
		version, _ = res[1].(int64)
	}
	return state, version
}

// A route removed by Remove keeps, for removedTTL, the connection it was
// taken from in the fields rs and rc (a tombstone): a Heartbeat of that
// connection still in flight then does not bring the session back. Any
// other connection writes over it.

// addRoute: KEYS[1] route; ARGV server, conn, mid, platform, ttl ms.
// Overwrites the route and returns the previous owner when it differs.
var addRoute = redis.NewScript(`
local prev = redis.call('HMGET', KEYS[1], 's', 'c', 'm', 'p')
redis.call('HSET', KEYS[1], 's', ARGV[1], 'c', ARGV[2], 'm', ARGV[3], 'p', ARGV[4])
redis.call('HDEL', KEYS[1], 'rs', 'rc')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if prev[1] and (prev[1] ~= ARGV[1] or prev[2] ~= ARGV[2]) then
  return {prev[1], prev[2] or '', prev[3] or '0', prev[4] or ''}
end
return {}
`)

// beatRoute: like addRoute but only when the route is absent or owned by
// (server, conn), and was not removed from (server, conn). Returns 1 when
// written, 0 when not.
var beatRoute = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 's', 'c', 'rs', 'rc')
if cur[1] and (cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]) then
  return 0
end
if cur[3] == ARGV[1] and cur[4] == ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'c', ARGV[2], 'm', ARGV[3], 'p', ARGV[4])
redis.call('HDEL', KEYS[1], 'rs', 'rc')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// removeRoute: KEYS[1] route; ARGV server, conn, tombstone ttl ms. Unless
// the route is owned by another connection, replaces it with the
// tombstone of (server, conn). Returns 1 when a live route was removed.
var removeRoute = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 's', 'c')
if cur[1] and (cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rs', ARGV[1], 'rc', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if cur[1] then return 1 end
return 0
`)

// A user-hash entry whose deadline is negative is a tombstone: Remove
// wrote it for the connection it names, which no Heartbeat may bring
// back until -deadline (a Heartbeat renews the route and then the user
// entry: a Remove can run between the two). Tombstones are neither live
// nor expired devices.

// luaEntry defines entry(v) in a script: the owner part and the deadline
// of a user-hash value.
const luaEntry = `local function entry(v)
  local i = string.find(v, '\0', 1, true)
  if not i then return '', 0 end
  return string.sub(v, i + 1), tonumber(string.sub(v, 1, i - 1)) or 0
end
`

// putUser: KEYS[1] user hash; ARGV device key, value, owner tag, now ms,
// keep ms, mode. Mode "hb" leaves a live entry of another owner, or a
// tombstone of this owner, alone ({0}). Expired entries and tombstones
// are pruned, and the hash lives as long as its longest entry plus
// expiryGrace (keep): an entry that expires stays until sweepUser reports
// it. Returns {2, version} when the user had no live device before
// (first), else {1}.
var putUser = redis.NewScript(luaVersion + luaEntry + `
local now = tonumber(ARGV[4])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local first = 1
if cur then
  local rest, dl = entry(cur)
  local mine = string.sub(rest, 1, #ARGV[3]) == ARGV[3]
  if dl < 0 then
    if ARGV[6] == 'hb' and mine and -dl > now then return {0} end
  elseif dl > now then
    if ARGV[6] == 'hb' and not mine then return {0} end
    first = 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local _, dl = entry(all[i + 1])
  if (dl < 0 and -dl <= now) or (dl >= 0 and dl <= now) then
    redis.call('HDEL', KEYS[1], all[i])
  elseif dl > now and all[i] ~= ARGV[1] then
    first = 0
  end
end
local keep = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
if first == 1 then return {2, version()} end
return {1}
`)

// removeUser: ARGV device key, owner tag, now ms, tombstone value,
// tombstone ttl ms. Unless the device entry is another connection's,
// writes the tombstone over it. Returns {0} when no entry of the
// connection was removed, {2, version} when the user has no live device
// left (last; the expired entries it still had go too, the offline is
// this one; other connections' tombstones stay until their time), else
// {1}.
var removeUser = redis.NewScript(luaVersion + luaEntry + `
local now = tonumber(ARGV[3])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local removed = false
if cur then
  local rest, dl = entry(cur)
  if string.sub(rest, 1, #ARGV[2]) ~= ARGV[2] then return {0} end
  removed = dl >= 0
end
if not removed then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
  end
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for j = 1, #all, 2 do
  local _, dl = entry(all[j + 1])
  if dl > now then return {1} end
  if dl >= 0 or -dl <= now then gone[#gone + 1] = all[j] end
end
for _, k in ipairs(gone) do redis.call('HDEL', KEYS[1], k) end
return {2, version()}
`)

// sweepUser: KEYS[1] user hash; ARGV now ms. {0} when no device entry is
// left, {1, latest deadline} when a device is live, else the expired
// entries are deleted and {2, device key, value, version} of the one that
// expired last is returned: the user went offline without a Remove,
// reported once.
var sweepUser = redis.NewScript(luaVersion + luaEntry + `
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local live, last, lastdl = 0, 0, -1
local expired = {}
for i = 1, #all, 2 do
  local _, dl = entry(all[i + 1])
  if dl > now then
    if dl > live then live = dl end
  elseif dl >= 0 then
    expired[#expired + 1] = all[i]
    if dl > lastdl then last, lastdl = i, dl end
  end
end
if live > 0 then return {1, live} end
if last == 0 then return {0} end
for _, k in ipairs(expired) do redis.call('HDEL', KEYS[1], k) end
return {2, all[last], all[last + 1], version()}
`)

// unindex: KEYS[1] expiry shard; ARGV mid, score read. Removes the member
// unless a write raised its score since.
var unindex = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
`)

// setRooms: KEYS[1] rooms hash of one comet; ARGV ttl ms, then room,
// count pairs. Replaces the hash.
var setRooms = redis.NewScript(`
redis.call('DEL', KEYS[1])
local batch = 256
for i = 2, #ARGV, batch do
  local last = math.min(i + batch - 1, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, last))
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`)

type scriptCall struct {
	s    *redis.Script
	keys []string
	args []any
	cmd  *redis.Cmd
}

// runScripts runs calls in one pipeline (one round trip per node), falling
// back to EVAL for scripts the server does not know yet. also, if set,
// adds commands to the pipeline (their errors are theirs to read).
func (r *Redis) runScripts(ctx context.Context, calls []scriptCall, also func(redis.Pipeliner)) {
	pipe := r.c.Pipeline()
	for i := range calls {
		calls[i].cmd = calls[i].s.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
	}
	if also != nil {
		also(pipe)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command
	for i := range calls {
		if redis.HasErrorPrefix(calls[i].cmd.Err(), "NOSCRIPT") {
			calls[i].cmd = calls[i].s.Eval(ctx, r.c, calls[i].keys, calls[i].args...)
		}
	}
}

// Add implements Store.
func (r *Redis) Add(ctx context.Context, s Session, ttl time.Duration) (AddResult, error) {
	if err := checkSession(s, ttl); err != nil {
		return AddResult{}, err
	}
	if err := checkIDs(s); err != nil {
		return AddResult{}, err
	}
	now := r.now()
	ms := ttl.Milliseconds()
	calls := [2]scriptCall{
		{s: addRoute, keys: []string{r.routeKey(s.Key)}, args: []any{s.Server, s.ConnID, s.Mid, s.Platform, ms}},
		{s: putUser, keys: []string{r.userKey(s.Mid)}, args: []any{s.Key, userValue(s, now.Add(ttl)), ownerTag(s), now.UnixMilli(), (ttl + expiryGrace).Milliseconds(), "add"}},
	}
	r.runScripts(ctx, calls[:], r.indexUser(ctx, s.Mid, now.Add(ttl)))
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil {
			return AddResult{}, unavailable("add", err)
		}
	}
	put, version := replyState(calls[1].cmd)
	res := AddResult{First: put == userFirstOrLast}
	if res.First {
		res.Version = version
	}
	prev, _ := calls[0].cmd.StringSlice()
	if len(prev) != 4 {
		return res, nil
	}
	mid, _ := strconv.ParseInt(prev[2], 10, 64)
	res.Prev, res.Replaced = Session{Key: s.Key, Server: prev[0], ConnID: prev[1], Mid: mid, Platform: prev[3]}, true
	return res, nil
}

// userFirstOrLast is putUser's answer for a user's first device and
// removeUser's for its last.
const userFirstOrLast = 2

// Heartbeat implements Store.
func (r *Redis) Heartbeat(ctx context.Context, s Session, ttl time.Duration) (HeartbeatResult, error) {
	if err := checkSession(s, ttl); err != nil {
		return HeartbeatResult{}, err
	}
	if err := checkIDs(s); err != nil {
		return HeartbeatResult{}, err
	}
	ms := ttl.Milliseconds()
	rc := beatRoute.Run(ctx, r.c, []string{r.routeKey(s.Key)}, s.Server, s.ConnID, s.Mid, s.Platform, ms)
	owner, err := rc.Int()
	if err != nil {
		return HeartbeatResult{}, unavailable("heartbeat", err)
	}
	if owner == 0 {
		return HeartbeatResult{}, nil
	}
	return r.heartbeatUser(ctx, s, ttl)
}

// heartbeatUser is Heartbeat's second half: the user entry, once the
// route was renewed.
func (r *Redis) heartbeatUser(ctx context.Context, s Session, ttl time.Duration) (HeartbeatResult, error) {
	now := r.now()
	calls := [1]scriptCall{{s: putUser, keys: []string{r.userKey(s.Mid)},
		args: []any{s.Key, userValue(s, now.Add(ttl)), ownerTag(s), now.UnixMilli(), (ttl + expiryGrace).Milliseconds(), "hb"}}}
	r.runScripts(ctx, calls[:], r.indexUser(ctx, s.Mid, now.Add(ttl)))
	if err := calls[0].cmd.Err(); err != nil {
		return HeartbeatResult{Owner: true}, unavailable("heartbeat", err)
	}
	res := HeartbeatResult{Owner: true}
	if put, version := replyState(calls[0].cmd); put == userFirstOrLast {
		res.First, res.Version = true, version
	}
	return res, nil
}

// indexUser adds the write of mid's device deadline to the expiry index
// (raised only) to a pipeline. Best effort: a user missing from the index
// only loses its expiry's offline report.
func (r *Redis) indexUser(ctx context.Context, mid int64, deadline time.Time) func(redis.Pipeliner) {
	return func(p redis.Pipeliner) {
		p.ZAddGT(ctx, r.expiryKey(mid), redis.Z{Score: float64(deadline.UnixMilli()), Member: mid})
	}
}

// Remove implements Store.
func (r *Redis) Remove(ctx context.Context, s Session) (RemoveResult, error) {
	if s.Key == "" || s.Server == "" {
		return RemoveResult{}, fmt.Errorf("%w: empty key or server", ErrInvalid)
	}
	if err := checkIDs(s); err != nil {
		return RemoveResult{}, err
	}
	now := r.now()
	calls := [2]scriptCall{
		{s: removeRoute, keys: []string{r.routeKey(s.Key)}, args: []any{s.Server, s.ConnID, removedTTL.Milliseconds()}},
		{s: removeUser, keys: []string{r.userKey(s.Mid)}, args: []any{s.Key, ownerTag(s), now.UnixMilli(),
			tombstoneValue(s, now.Add(removedTTL)), removedTTL.Milliseconds()}},
	}
	r.runScripts(ctx, calls[:], nil)
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil {
			return RemoveResult{}, unavailable("remove", err)
		}
	}
	route, _ := calls[0].cmd.Int()
	user, version := replyState(calls[1].cmd)
	res := RemoveResult{Removed: route == 1, Last: user == userFirstOrLast}
	if res.Last {
		res.Version = version
	}
	return res, nil
}

// Servers implements Store.
func (r *Redis) Servers(ctx context.Context, keys []string) ([]string, error) {
	out := make([]string, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	pipe := r.c.Pipeline()
	for i, k := range keys {
		cmds[i] = pipe.HGet(ctx, r.routeKey(k), fieldServer)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, unavailable("servers", err)
		default:
			out[i] = v
		}
	}
	return out, nil
}

// Devices implements Store.
func (r *Redis) Devices(ctx context.Context, mids []int64) (map[int64][]Device, error) {
	out := make(map[int64][]Device, len(mids))
	if len(mids) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(mids))
	pipe := r.c.Pipeline()
	for i, mid := range mids {
		cmds[i] = pipe.HGetAll(ctx, r.userKey(mid))
	}
	_, _ = pipe.Exec(ctx)
	now := r.now().UnixMilli()
	for i, c := range cmds {
		m, err := c.Result()
		if err != nil {
			return nil, unavailable("devices", err)
		}
		for k, v := range m {
			d, dl, ok := parseUserValue(k, v)
			if ok && dl > now {
				out[mids[i]] = append(out[mids[i]], d)
			}
		}
	}
	return out, nil
}

// SetRoomCounts implements Store.
func (r *Redis) SetRoomCounts(ctx context.Context, server string, counts map[string]int32, ttl time.Duration) error {
	if server == "" || ttl <= 0 {
		return fmt.Errorf("%w: empty server or non-positive ttl", ErrInvalid)
	}
	args := make([]any, 0, 1+2*len(counts))
	args = append(args, ttl.Milliseconds())
	for room, c := range counts {
		if c > 0 {
			args = append(args, room, c)
		}
	}
	deadline := r.now().Add(ttl).UnixMilli()
	calls := [1]scriptCall{{s: setRooms, keys: []string{r.roomsKey(server)}, args: args}}
	r.runScripts(ctx, calls[:], nil)
	if err := calls[0].cmd.Err(); err != nil {
		return unavailable("set room counts", err)
	}
	pipe := r.c.Pipeline()
	pipe.ZAdd(ctx, r.serversKey(), redis.Z{Score: float64(deadline), Member: server})
	pipe.ZRemRangeByScore(ctx, r.serversKey(), "-inf", "("+strconv.FormatInt(r.now().UnixMilli(), 10))
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("set room counts", err)
	}
	return nil
}

// RoomCounts implements Store.
func (r *Redis) RoomCounts(ctx context.Context) (map[string]int32, error) {
	now := strconv.FormatInt(r.now().UnixMilli(), 10)
	servers, err := r.c.ZRangeByScore(ctx, r.serversKey(), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable("room counts", err)
	}
	out := make(map[string]int32)
	if len(servers) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(servers))
	pipe := r.c.Pipeline()
	for i, s := range servers {
		cmds[i] = pipe.HGetAll(ctx, r.roomsKey(s))
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		m, err := c.Result()
		if err != nil {
			return nil, unavailable("room counts", err)
		}
		for room, v := range m {
			n, err := strconv.ParseInt(v, 10, 32)
			if err == nil && n > 0 {
				out[room] += int32(n)
			}
		}
	}
	return out, nil
}

// ExpiredUsers implements Store. It reads the index shards whose users'
// latest deadline has passed (one pipeline), asks each user's hash
// whether a device is still live (one pipeline of sweepUser: the script
// that deletes the hash reports the user, so concurrent callers report it
// once), then drops the reported and gone users from the index and raises
// the score of the live ones (one pipeline).
func (r *Redis) ExpiredUsers(ctx context.Context, limit int) ([]Expired, bool, error) {
	if limit <= 0 {
		return nil, false, fmt.Errorf("%w: limit must be positive", ErrInvalid)
	}
	now := r.now().UnixMilli()
	nowArg := strconv.FormatInt(now, 10)
	pipe := r.c.Pipeline()
	// Each call starts at another shard, so that a backlog in one does
	// not starve the others when the limit cuts.
	start := int(r.sweepStart.Add(1))
	shards := make([]*redis.ZSliceCmd, expiryShards)
	for i := range shards {
		shards[i] = pipe.ZRangeByScoreWithScores(ctx, r.expiryShardKey((start+i)%expiryShards),
			&redis.ZRangeBy{Min: "-inf", Max: nowArg, Count: int64(limit)})
	}
	_, _ = pipe.Exec(ctx)
	var found []sweepScratch
	for i, c := range shards {
		zs, err := c.Result()
		if err != nil {
			return nil, false, unavailable("expired users", err)
		}
		for _, z := range zs {
			mid, err := strconv.ParseInt(fmt.Sprint(z.Member), 10, 64)
			if err != nil {
				continue // not written by this store
			}
			found = append(found, sweepScratch{key: r.expiryShardKey((start + i) % expiryShards), mid: mid, score: z.Score})
		}
	}
	more := len(found) >= limit
	if len(found) > limit {
		found = found[:limit]
	}
	if len(found) == 0 {
		return nil, false, nil
	}
	calls := make([]scriptCall, len(found))
	for i, f := range found {
		calls[i] = scriptCall{s: sweepUser, keys: []string{r.userKey(f.mid)}, args: []any{now}}
	}
	r.runScripts(ctx, calls, nil)
	var out []Expired
	var firstErr error // a failed user is left for a later sweep; the others go on
	fix := make([]scriptCall, 0, len(found))
	var raise []redis.Z
	var raiseKeys []string
	for i, c := range calls {
		res, err := c.cmd.Slice()
		if err != nil || len(res) == 0 {
			if err == nil {
				err = errors.New("empty sweep reply")
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		f := found[i]
		state, _ := res[0].(int64)
		switch {
		case state == sweepLive && len(res) == 2:
			dl, _ := res[1].(int64)
			raise = append(raise, redis.Z{Score: float64(dl), Member: f.mid})
			raiseKeys = append(raiseKeys, f.key)
			continue
		case state == sweepOffline && len(res) == 4:
			key, _ := res[1].(string)
			val, _ := res[2].(string)
			version, _ := res[3].(int64)
			if d, _, ok := parseUserValue(key, val); ok {
				out = append(out, Expired{Session: Session{Key: d.Key, Mid: f.mid, Server: d.Server, ConnID: d.ConnID, Platform: d.Platform}, Version: version})
			}
		}
		fix = append(fix, scriptCall{s: unindex, keys: []string{f.key}, args: []any{f.mid, f.score}})
	}
	if len(fix) > 0 || len(raise) > 0 {
		r.runScripts(ctx, fix, func(p redis.Pipeliner) {
			for i, z := range raise {
				p.ZAddGT(ctx, raiseKeys[i], z)
			}
		})
	}
	for _, c := range fix {
		// Reported users stay reported (their entries are gone); an
		// index entry left behind is dropped by a later sweep.
		if err := c.cmd.Err(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return out, false, unavailable("expired users", firstErr)
	}
	return out, more, nil
}

// sweepUser's states.
const (
	sweepLive    = 1
	sweepOffline = 2
)
