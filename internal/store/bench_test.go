package store_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/store/storetest"
)

const (
	benchBatch     = 100
	benchConvs     = 64
	benchRangeSize = 1000
	benchPageSize  = 100
)

func benchStores(b *testing.B, fn func(b *testing.B, s store.Store)) {
	b.Run("bolt", func(b *testing.B) { fn(b, openBolt(b, b.TempDir())) })
	b.Run("bolt-nosync", func(b *testing.B) {
		s, err := store.OpenBolt(store.BoltConfig{Dir: b.TempDir(), NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		fn(b, s)
	})
	b.Run("postgres", func(b *testing.B) { fn(b, openPostgres(b)) })
}

func BenchmarkAppend(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		conv := store.GroupConvID(1)
		seq := int64(0)
		b.ReportAllocs()
		for b.Loop() {
			seq++
			if _, _, err := s.Append(ctx, storetest.Msg(conv, seq)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAppendParallel(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		var seq atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(8) // 8 goroutines per CPU: many logic requests in flight
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n := seq.Add(1)
				conv := store.GroupConvID(n%benchConvs + 1)
				if _, _, err := s.Append(ctx, storetest.Msg(conv, n)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkAppendBatch(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		seq := int64(0)
		msgs := make([]*protocol.Msg, benchBatch)
		b.ReportAllocs()
		for b.Loop() {
			for i := range msgs {
				seq++
				msgs[i] = storetest.Msg(store.GroupConvID(seq%benchConvs+1), seq)
			}
			res, err := s.AppendBatch(ctx, msgs)
			if err != nil || res[0].Err != nil {
				b.Fatal(err, res[0].Err)
			}
		}
		b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkAppendTouch is the group commit of 1:1 messages as the send
// path does it: benchBatch messages of benchConvs conversations, each
// touching its two users, who mostly have the conversation already.
func BenchmarkAppendTouch(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		seq := int64(0)
		items := make([]store.AppendItem, benchBatch)
		b.ReportAllocs()
		for b.Loop() {
			for i := range items {
				seq++
				a := seq%benchConvs + 1
				items[i] = store.AppendItem{Msg: storetest.Msg(store.SingleConvID(a, a+benchConvs), seq), Users: []int64{a, a + benchConvs}}
			}
			res, err := s.AppendTouch(ctx, items)
			if err != nil || res[0].Err != nil {
				b.Fatal(err, res[0].Err)
			}
		}
		b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
	})
}

func BenchmarkRange(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		conv := store.GroupConvID(1)
		msgs := make([]*protocol.Msg, benchRangeSize)
		for i := range msgs {
			msgs[i] = storetest.Msg(conv, int64(i+1))
		}
		if _, err := s.AppendBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		from := int64(0)
		b.ReportAllocs()
		for b.Loop() {
			got, _, err := s.Range(ctx, conv, from, benchPageSize)
			if err != nil || len(got) == 0 {
				b.Fatal(err, len(got))
			}
			from = (from + benchPageSize) % (benchRangeSize - benchPageSize)
		}
	})
}

// BenchmarkConversations is a reconnect sync of a user with benchConvIndex
// conversations of which one moved.
func BenchmarkConversations(b *testing.B) {
	const benchConvIndex = 500
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		cursors := make(map[string]int64, benchConvIndex)
		msgs := make([]*protocol.Msg, 0, benchConvIndex)
		for i := range benchConvIndex {
			conv := store.SingleConvID(1, int64(i+2))
			msgs = append(msgs, storetest.Msg(conv, 3))
			if err := s.Touch(ctx, []int64{1}, conv, 3); err != nil {
				b.Fatal(err)
			}
			cursors[conv] = 3
		}
		if _, err := s.AppendBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		cursors[store.SingleConvID(1, 2)] = 2
		b.ReportAllocs()
		for b.Loop() {
			got, err := s.Conversations(ctx, 1, cursors)
			if err != nil || len(got) != 1 {
				b.Fatal(err, len(got))
			}
		}
	})
}

// BenchmarkSyncPagePostgres: one conversation sync page (5 messages after
// the cursor, max seq, read seq) as three calls, as the sync path did,
// and as one SyncPage batch; 8 goroutines per CPU.
func BenchmarkSyncPagePostgres(b *testing.B) {
	s := openPostgres(b)
	ctx := context.Background()
	const user, pageMsgs = 1, 5
	conv := store.SingleConvID(user, 2)
	for seq := int64(1); seq <= pageMsgs+1; seq++ {
		if _, _, err := s.Append(ctx, storetest.Msg(conv, seq)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Touch(ctx, []int64{user}, conv, pageMsgs+1); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, page func() error) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := page(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("three-calls", func(b *testing.B) {
		run(b, func() error {
			if _, _, err := s.Range(ctx, conv, 1, benchPageSize); err != nil {
				return err
			}
			if _, err := s.MaxSeq(ctx, conv); err != nil {
				return err
			}
			_, err := s.Conversation(ctx, user, conv)
			return err
		})
	})
	b.Run("sync-page", func(b *testing.B) {
		run(b, func() error {
			p, err := s.SyncPage(ctx, user, conv, 1, benchPageSize)
			if err == nil && len(p.Msgs) != pageMsgs {
				b.Fatalf("page of %d messages, want %d", len(p.Msgs), pageMsgs)
			}
			return err
		})
	})
}

// BenchmarkSetDeliveredPostgres: delivered marks of many devices at once
// (8 goroutines per CPU), as logic records the SDKs' delivered acks.
func BenchmarkSetDeliveredPostgres(b *testing.B) {
	s := openPostgres(b)
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			user := i%200 + 1
			if err := s.SetDelivered(ctx, user, "dev", store.SingleConvID(user, user+1000), i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
