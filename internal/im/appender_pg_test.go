package im

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
)

// openBenchPostgres opens a PostgreSQL store in a fresh schema of the test
// server, dropped at the end.
func openBenchPostgres(tb testing.TB, maxConns int32) *store.Postgres {
	tb.Helper()
	dsn := testenv.PostgresDSN(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "imbench_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.NewPostgres(ctx, store.PostgresConfig{DSN: dsn, Schema: schema, MaxConns: maxConns})
	if err != nil {
		tb.Fatalf("NewPostgres: %v", err)
	}
	tb.Cleanup(func() {
		_ = st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("cleanup connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema: %v", err)
		}
	})
	return st
}

// benchSendStore measures the store part of 1:1 sends from 200 concurrent
// senders (100 per CPU here) on PostgreSQL: msgs/s and the p99 of one
// store call. perMessage is the path before group commit (Append, then
// Touch: two commits per message); otherwise the appender.
func benchSendStore(b *testing.B, maxConns int32, concurrency int, perMessage bool) {
	st := openBenchPostgres(b, maxConns)
	a := newAppender(st, 0, DefaultAppendMaxBatch, concurrency, nil)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		ctx   = context.Background()
		users atomic.Int64
	)
	b.SetParallelism(100)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		u := 1000 + users.Add(1)
		conv := store.SingleConvID(1, u)
		pair := []int64{1, u}
		var mine []time.Duration
		for seq := int64(1); pb.Next(); seq++ {
			m := &protocol.Msg{ConvId: conv, Seq: seq, MsgId: next.Add(1), Sender: 1, To: u,
				ConvType: protocol.ConvType_CONV_TYPE_SINGLE, Payload: []byte("benchmark payload 24 byt")}
			t := time.Now()
			var err error
			if perMessage {
				if _, _, err = st.Append(ctx, m); err == nil {
					err = st.Touch(ctx, pair, conv, seq)
				}
			} else {
				_, _, err = a.append(ctx, m, pair, t.Add(DefaultSettleTime/storeShare))
			}
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t))
		}
		mu.Lock()
		lats = append(lats, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lats)
	if len(lats) > 0 {
		b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50-ms")
	}
}

func BenchmarkSendStorePostgresPerMessagePool32(b *testing.B) { benchSendStore(b, 32, 0, true) }

func BenchmarkSendStorePostgresGroupCommit(b *testing.B) {
	for _, c := range []struct {
		name        string
		pool        int32
		concurrency int
	}{{"pool4-conc2", 4, 2}, {"pool4-conc4", 4, 4}, {"pool32-conc4", 32, 4}, {"pool32-conc8", 32, 8}} {
		b.Run(c.name, func(b *testing.B) { benchSendStore(b, c.pool, c.concurrency, false) })
	}
}
