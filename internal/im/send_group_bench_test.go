package im

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// Shape of the group send benchmark: benchGroupCount groups of
// benchGroupSize members each; sender n%benchGroupSize+1 of group
// n%benchGroupCount+1 sends message n.
const (
	benchGroupCount = 100
	benchGroupSize  = 20
)

// memberReader is the group part of the send path's store.
type memberReader interface {
	IsMember(ctx context.Context, groupID, userID int64) (bool, error)
	Group(ctx context.Context, groupID int64) (store.Group, error)
	Members(ctx context.Context, groupID int64) ([]int64, error)
}

// countingGroups answers the membership calls of the send path from
// groups and counts them; the rest is a storeOnlyBolt.
type countingGroups struct {
	storeOnlyBolt
	groups  memberReader
	queries atomic.Int64
}

func (c *countingGroups) IsMember(ctx context.Context, groupID, userID int64) (bool, error) {
	c.queries.Add(1)
	return c.groups.IsMember(ctx, groupID, userID)
}

func (c *countingGroups) Group(ctx context.Context, groupID int64) (store.Group, error) {
	c.queries.Add(1)
	return c.groups.Group(ctx, groupID)
}

func (c *countingGroups) Members(ctx context.Context, groupID int64) ([]int64, error) {
	c.queries.Add(1)
	return c.groups.Members(ctx, groupID)
}

// benchGroupStore creates the benchmark's groups in gs.
func benchGroupStore(tb testing.TB, gs store.GroupStore) {
	tb.Helper()
	ctx := context.Background()
	users := make([]int64, benchGroupSize)
	for i := range users {
		users[i] = int64(i + 1)
	}
	for g := int64(1); g <= benchGroupCount; g++ {
		if _, err := gs.CreateGroup(ctx, store.Group{ID: g, Name: "bench", Owner: 1}); err != nil {
			tb.Fatal(err)
		}
		if _, err := gs.AddMembers(ctx, g, users); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchSendGroup sends b.N group messages (Redis dedup and seq, a store
// that does not write messages) with membership from groups; it reports
// the membership queries per send (member-q/op).
func benchSendGroup(b *testing.B, cfg Config, groups store.GroupStore, parallelism int) {
	benchGroupStore(b, groups)
	svc, _ := newRedisBenchService(b, cfg)
	cg := &countingGroups{storeOnlyBolt: svc.deps.Store.(storeOnlyBolt), groups: groups}
	svc, err := NewService(cfg, Deps{Seq: svc.deps.Seq, Dedup: svc.deps.Dedup, Store: cg, IDs: &counterIDs{}, Producer: nopProducer{}, Metrics: svc.deps.Metrics})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	cg.queries.Store(0)
	b.Cleanup(func() { b.ReportMetric(float64(cg.queries.Load())/float64(b.N), "member-q/op") })
	b.RunParallel(func(pb *testing.PB) {
		req := &protocol.MsgSend{ConvType: protocol.ConvType_CONV_TYPE_GROUP, Payload: []byte("hello")}
		for pb.Next() {
			n := next.Add(1)
			sender := 1 + n%benchGroupSize
			req.To = 1 + n%benchGroupCount
			req.ClientMsgId = "g" + strconv.FormatInt(n, 10)
			if ack := svc.Send(ctx, sender, "k", req); ack.Status != protocol.Status_STATUS_OK {
				b.Fatalf("send: %v %s", ack.Status, ack.Reason)
			}
		}
	})
}

// BenchmarkSendGroup: group sends over Redis (dedup and seq) with a store
// that does not write messages; membership from bolt or PostgreSQL.
func BenchmarkSendGroup(b *testing.B) {
	for _, par := range []int{1, 50} {
		b.Run(fmt.Sprintf("members=bolt/senders=%dxGOMAXPROCS", par), func(b *testing.B) {
			st, err := store.OpenBolt(store.BoltConfig{Dir: b.TempDir(), NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			benchSendGroup(b, Config{}, st, par)
		})
		b.Run(fmt.Sprintf("members=postgres/senders=%dxGOMAXPROCS", par), func(b *testing.B) {
			benchSendGroup(b, Config{}, openBenchPostgres(b, 0), par)
		})
	}
}
