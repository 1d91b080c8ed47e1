package im

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

// gatedDevices blocks its first lookup until released, fails the next
// failures lookups, and counts them all.
type gatedDevices struct {
	release  chan struct{}
	once     sync.Once
	calls    atomic.Int64
	failures atomic.Int64
}

func (g *gatedDevices) Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error) {
	g.calls.Add(1)
	g.once.Do(func() { <-g.release })
	if g.failures.Add(-1) >= 0 {
		return nil, errors.New("redis down")
	}
	return devices.Devices(ctx, mids)
}

// Records a consumer delivers are deferred and fanned out in batches per
// partition: in order, with fewer lookups than records, retried after a
// failed lookup, and committed once pushed.
func TestFanoutPipelinesConsumedRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := mq.NewMemory(mq.MemoryConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 50
	for seq := int64(1); seq <= n; seq++ {
		ev := &logicpb.MsgEvent{Kind: logicpb.MsgEvent_MESSAGE, Users: []int64{1, 2}, OriginKey: "a-phone",
			Msg: &protocol.Msg{ConvId: "s:1:2", ConvType: protocol.ConvType_CONV_TYPE_SINGLE, Seq: seq, Sender: 1, To: 2}}
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Publish(ctx, mq.TopicMessage, []byte("s:1:2"), v); err != nil {
			t.Fatal(err)
		}
	}
	lookups := &gatedDevices{release: make(chan struct{})}
	lookups.failures.Store(1) // the first batch fails once: retried, not lost
	d := &recordingDispatcher{}
	f, err := NewFanout(FanoutConfig{}, FanoutDeps{Devices: lookups, Members: fakeMembers{}, Dispatcher: d})
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	c := q.Consumer("job", mq.TopicMessage)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(runCtx, func(ctx context.Context, m *mq.Message) error {
			handled.Add(1)
			return f.Handle(ctx, m)
		})
	}()
	// Handle does not wait for the blocked lookup: every record is handed
	// over while the first one is still being fanned out.
	for handled.Load() < n {
		if ctx.Err() != nil {
			t.Fatalf("handled %d of %d records while a lookup was blocked", handled.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(lookups.release)
	// Every seq reaches b-phone (c2) and a-web (c2), never a-phone, in order.
	for {
		d.mu.Lock()
		got := len(d.pushes)
		d.mu.Unlock()
		if got == n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d pushes", got, n)
		}
		time.Sleep(time.Millisecond)
	}
	d.mu.Lock()
	for i, p := range d.pushes {
		var msg protocol.Msg
		if err := proto.Unmarshal(p.Msg, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.Seq != int64(i+1) || p.Server != "c2" || len(p.Keys) != 2 {
			t.Fatalf("push %d: seq %d to %s %v, want seq %d to c2 [a-web b-phone]", i, msg.Seq, p.Server, p.Keys, i+1)
		}
	}
	d.mu.Unlock()
	if calls := lookups.calls.Load(); calls > 4 {
		t.Errorf("%d device lookups for %d records: not batched", calls, n)
	}
	// Acknowledged, so committed: a new consumer of the group gets nothing.
	// The drain goroutines end once their last batch is acknowledged
	// (stopping on the pushes alone could beat the acks: a flake).
	f.Wait()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.Wait() // the drain goroutines end with their queue
	var again atomic.Int64
	c2 := q.Consumer("job", mq.TopicMessage)
	ctx2, stop2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop2()
	_ = c2.Run(ctx2, func(context.Context, *mq.Message) error { again.Add(1); return nil })
	if again.Load() != 0 {
		t.Errorf("%d records redelivered after they were pushed and acknowledged", again.Load())
	}
}
