package logic

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	pb "github.com/hubuim/hubuim/api/logic"
)

// roomSep separates a room's type and id in a room key ("live://1000").
const roomSep = "://"

// MaxTopLimit bounds OnlineTop's limit.
const MaxTopLimit = 1000

type onlineSnapshot struct {
	counts map[string]int32 // room key → count; shared, never modified
	at     time.Time
}

// roomCounts returns the cluster-wide room counts, loading them at most
// once per conn.online_cache. The map is shared: callers must not modify
// it.
func (l *Logic) roomCounts(ctx context.Context) (map[string]int32, error) {
	if s := l.online.Load(); s != nil && time.Since(s.at) < l.cfg.Conn.OnlineCache {
		return s.counts, nil
	}
	l.onlineM.Lock()
	defer l.onlineM.Unlock()
	if s := l.online.Load(); s != nil && time.Since(s.at) < l.cfg.Conn.OnlineCache {
		return s.counts, nil // loaded while we waited
	}
	counts, err := l.store.RoomCounts(ctx)
	if err != nil {
		l.m.onlineLoads.WithLabelValues(resultError).Inc()
		return nil, err
	}
	l.m.onlineLoads.WithLabelValues(resultOK).Inc()
	l.online.Store(&onlineSnapshot{counts: counts, at: time.Now()})
	return counts, nil
}

// roomKey joins a room type and id.
func roomKey(typ, room string) string { return typ + roomSep + room }

func checkRoomType(typ string) error {
	if typ == "" || strings.Contains(typ, roomSep) || !utf8.ValidString(typ) {
		return fmt.Errorf("%w: type must be non-empty UTF-8 and must not contain %q", ErrInvalidArgument, roomSep)
	}
	return nil
}

// OnlineTop returns the most populated rooms of a type, largest first.
func (l *Logic) OnlineTop(ctx context.Context, typ string, limit int) ([]*pb.RoomCount, error) {
	if err := checkRoomType(typ); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxTopLimit {
		return nil, fmt.Errorf("%w: limit must be in [1, %d]", ErrInvalidArgument, MaxTopLimit)
	}
	counts, err := l.roomCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	prefix := typ + roomSep
	top := make([]*pb.RoomCount, 0, min(limit, len(counts)))
	for key, c := range counts {
		if id, ok := strings.CutPrefix(key, prefix); ok {
			top = append(top, &pb.RoomCount{RoomId: id, Count: c})
		}
	}
	slices.SortFunc(top, func(a, b *pb.RoomCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.RoomId, b.RoomId)
	})
	if len(top) > limit {
		top = top[:limit]
	}
	return top, nil
}

// OnlineRoom returns the online count of each room of a type.
func (l *Logic) OnlineRoom(ctx context.Context, typ string, rooms []string) (map[string]int32, error) {
	if err := checkRoomType(typ); err != nil {
		return nil, err
	}
	if len(rooms) == 0 {
		return nil, fmt.Errorf("%w: no rooms", ErrInvalidArgument)
	}
	if len(rooms) > l.cfg.Push.MaxTargets {
		return nil, fmt.Errorf("%w: %d rooms, limit %d", ErrInvalidArgument, len(rooms), l.cfg.Push.MaxTargets)
	}
	counts, err := l.roomCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := make(map[string]int32, len(rooms))
	for _, r := range rooms {
		out[r] = counts[roomKey(typ, r)]
	}
	return out, nil
}

// OnlineTotal returns the distinct client IP addresses and the
// connections of every live comet, as reported to discovery (refreshed
// every comet register_interval). Both are sums over the comets, as in
// goim: a client IP with connections on two comets counts twice. A comet
// that does not report its IP count adds 0.
func (l *Logic) OnlineTotal(context.Context) (ipCount, connCount int64) {
	for _, c := range *l.comets.Load() {
		ipCount += c.IPs
		connCount += c.Conns
	}
	return ipCount, connCount
}
