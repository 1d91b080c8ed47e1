package job

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// ackBackend is a queue shared by successive job instances of one group.
type ackBackend struct {
	publish     func(tb testing.TB, key string, value []byte)
	newConsumer func(tb testing.TB) mq.Consumer // a new member of the group "job"
}

func memoryAckBackend(tb testing.TB) ackBackend {
	mem, err := mq.NewMemory(mq.MemoryConfig{Partitions: 4, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = mem.Close() })
	return ackBackend{
		publish: func(tb testing.TB, key string, value []byte) {
			tb.Helper()
			if err := mem.Publish(context.Background(), mq.TopicPush, []byte(key), value); err != nil {
				tb.Fatal(err)
			}
		},
		newConsumer: func(testing.TB) mq.Consumer { return mem.Consumer("job", mq.TopicPush) },
	}
}

func kafkaAckBackend(tb testing.TB) ackBackend {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, mq.TopicPush), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cluster.Close)
	kcfg := mq.KafkaConfig{
		Brokers: cluster.ListenAddrs(), SessionTimeout: 2 * time.Second, HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout: 2 * time.Second, AutoCommitInterval: 100 * time.Millisecond, ErrorBackoff: 50 * time.Millisecond,
	}
	prod, err := mq.NewKafkaProducer(kcfg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = prod.Close() })
	return ackBackend{
		publish: func(tb testing.TB, key string, value []byte) {
			tb.Helper()
			if err := prod.Publish(context.Background(), mq.TopicPush, []byte(key), value); err != nil {
				tb.Fatal(err)
			}
		},
		newConsumer: func(tb testing.TB) mq.Consumer {
			c, err := mq.NewKafkaConsumer(kcfg, []string{mq.TopicPush}, "job", nil, nil)
			if err != nil {
				tb.Fatal(err)
			}
			return c
		},
	}
}

// ackJob is one job instance running on its own consumer.
type ackJob struct {
	job    *Job
	static *discovery.Static
	cancel context.CancelFunc
	done   chan error
}

// startAckJob runs a job instance on a new member of be's group. It is
// closed (if still running) when the test ends.
func startAckJob(tb testing.TB, be ackBackend, cfg Config, comets ...*fakeComet) *ackJob {
	tb.Helper()
	var list []discovery.Instance
	for _, c := range comets {
		list = append(list, c.instance())
	}
	static := discovery.NewStatic(list...)
	cons := be.newConsumer(tb)
	j, err := New(cfg, Deps{Consumer: cons, Watcher: static, Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &ackJob{job: j, static: static, cancel: cancel, done: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		a.done <- j.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		_ = j.Close()
		<-exited
		_ = cons.Close()
		_ = static.Close()
	})
	return a
}

func publishRoom(tb testing.TB, be ackBackend, room, body string) {
	tb.Helper()
	v, err := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_ROOM, Operation: testOp, Room: room, Msg: []byte(body)})
	if err != nil {
		tb.Fatal(err)
	}
	be.publish(tb, room, v)
}

// roomBodies lists the bodies of the single (unbatched) room pushes f got,
// and how many batched ones (OpRaw) it got.
func (f *fakeComet) roomBodies() (single []string, raw int) {
	_, rooms, _ := f.snapshot()
	for _, r := range rooms {
		if r.Proto.GetOp() == protocol.OpRaw {
			raw++
			continue
		}
		single = append(single, string(r.Proto.GetBody()))
	}
	return single, raw
}

// A window long enough that the first instance never flushes by itself.
const ackTestWindow = time.Hour

func forEachAckBackend(t *testing.T, test func(t *testing.T, be ackBackend)) {
	t.Run("memory", func(t *testing.T) { test(t, memoryAckBackend(t)) })
	t.Run("kafka", func(t *testing.T) { test(t, kafkaAckBackend(t)) })
}

// TestRoomPushInWindowRedeliveredAfterStop: a job whose consumer stops
// (its Run context cancelled, as good as a crash for the queue) while a
// room push sits in an open batch has not acknowledged it, so a new job
// instance receives it.
func TestRoomPushInWindowRedeliveredAfterStop(t *testing.T) {
	forEachAckBackend(t, func(t *testing.T, be ackBackend) {
		a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
		first := startAckJob(t, be, Config{RoomBatchWindow: ackTestWindow}, a)
		publishRoom(t, be, "live://1", "in-window")
		eventually(t, func() bool { return first.job.rooms.open() == 1 }, "room push never reached the batcher")
		first.cancel()
		select {
		case err := <-first.done:
			if err != nil {
				t.Fatalf("Run after cancel = %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Run did not return after cancel")
		}
		if got, raw := a.roomBodies(); len(got)+raw != 0 {
			t.Fatalf("first job delivered %v (+%d batches) with its window still open", got, raw)
		}

		startAckJob(t, be, Config{}, b)
		eventually(t, func() bool { got, _ := b.roomBodies(); return len(got) == 1 }, "new job instance did not receive the room push")
		if got, raw := b.roomBodies(); got[0] != "in-window" || raw != 0 {
			t.Fatalf("new job delivered %q (+%d batches), want [in-window]", got, raw)
		}
	})
}

// TestRoomPushInWindowCommittedOnClose: Close flushes the open batches
// before it stops the consumer, so their records are acknowledged and
// committed: delivered once, by the closing job, and not again.
func TestRoomPushInWindowCommittedOnClose(t *testing.T) {
	forEachAckBackend(t, func(t *testing.T, be ackBackend) {
		a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
		first := startAckJob(t, be, Config{RoomBatchWindow: ackTestWindow}, a)
		publishRoom(t, be, "live://1", "first")
		eventually(t, func() bool { return first.job.rooms.open() == 1 }, "room push never reached the batcher")
		if err := first.job.Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { got, _ := a.roomBodies(); return len(got) == 1 }, "closing job did not flush its batch")

		startAckJob(t, be, Config{}, b)
		publishRoom(t, be, "live://1", "second") // same key, same partition: after "first"
		eventually(t, func() bool { got, raw := b.roomBodies(); return len(got)+raw > 0 }, "new job received nothing")
		// A redelivered "first" would come before "second", alone or
		// batched with it.
		if got, raw := b.roomBodies(); len(got) != 1 || got[0] != "second" || raw != 0 {
			t.Fatalf("new job delivered %q (+%d batches), want [second]", got, raw)
		}
	})
}

// TestRoomBatchForGoneCometCountsAsHandled: a room batch flushed when its
// comet has left discovery reaches no comet, yet its records are
// acknowledged (there is nowhere to deliver them): a new job instance does
// not get them again.
func TestRoomBatchForGoneCometCountsAsHandled(t *testing.T) {
	be := memoryAckBackend(t)
	a, b := startFakeComet(t, "a"), startFakeComet(t, "b")
	first := startAckJob(t, be, Config{RoomBatchWindow: ackTestWindow, RoomBatchMax: 2}, a)
	publishRoom(t, be, "live://1", "x1")
	eventually(t, func() bool { return first.job.rooms.open() == 1 }, "room push never reached the batcher")
	first.static.Set(discovery.ServiceComet, nil)
	eventually(t, func() bool { return len(first.job.view.Load().all) == 0 }, "comet a still listed")
	publishRoom(t, be, "live://1", "x2") // fills the batch: flushed to no comet
	eventually(t, func() bool { return first.job.rooms.open() == 0 }, "full batch not flushed")
	first.cancel()
	<-first.done
	if got, raw := a.roomBodies(); len(got)+raw != 0 {
		t.Fatalf("removed comet got %q (+%d batches)", got, raw)
	}

	startAckJob(t, be, Config{}, b)
	publishRoom(t, be, "live://1", "third")
	eventually(t, func() bool { got, raw := b.roomBodies(); return len(got)+raw > 0 }, "new job received nothing")
	if got, raw := b.roomBodies(); len(got) != 1 || got[0] != "third" || raw != 0 {
		t.Fatalf("new job delivered %q (+%d batches), want [third]", got, raw)
	}
}
