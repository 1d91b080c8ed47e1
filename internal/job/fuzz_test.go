package job

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// FuzzHandlePush feeds arbitrary records to the push handler: it must never
// panic and never fail (a bad record is dropped, not retried forever).
func FuzzHandlePush(f *testing.F) {
	for _, pm := range []*logic.PushMsg{
		{Type: logic.PushMsg_PUSH, Operation: 1001, Server: "a", Keys: []string{"k1", "k2"}, Msg: []byte("x")},
		{Type: logic.PushMsg_ROOM, Operation: 1001, Room: "live://1", Msg: []byte("y")},
		{Type: logic.PushMsg_BROADCAST, Operation: 1001, Speed: 7, Msg: []byte("z")},
		{Type: 42},
	} {
		b, _ := proto.Marshal(pm)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0x01})
	j, err := New(Config{Workers: 2, QueueSize: 4096}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(),
		Dial: nopDial, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = j.Close() })
	j.apply([]discovery.Instance{{ID: "a", Addrs: map[string]string{discovery.AddrGRPC: "stub"}}})
	f.Fuzz(func(t *testing.T, value []byte) {
		if err := j.handle(context.Background(), &mq.Message{Topic: mq.TopicPush, Value: value}); err != nil {
			t.Fatalf("handle = %v", err)
		}
	})
}

func TestQueueDepthMetric(t *testing.T) {
	a := startFakeComet(t, "a")
	a.block = make(chan struct{})
	defer close(a.block)
	reg := prometheus.NewRegistry()
	j, err := New(Config{Workers: 1, PushBatchMax: 1, RPCTimeout: time.Hour, DrainTimeout: 50 * time.Millisecond}, Deps{Consumer: noConsumer{}, Watcher: discovery.NewStatic(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.apply([]discovery.Instance{a.instance()})
	for range 3 {
		if err := j.Dispatch(context.Background(), &logic.PushMsg{Type: logic.PushMsg_PUSH, Server: "a", Keys: []string{"k"}}); err != nil {
			t.Fatal(err)
		}
	}
	// One call in flight at the blocked comet, two queued.
	eventually(t, func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "hubuim_job_comet_queue_depth" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if len(m.GetLabel()) == 1 && strings.EqualFold(m.GetLabel()[0].GetValue(), "a") && m.GetGauge().GetValue() == 2 {
					return true
				}
			}
		}
		return false
	}, "queue depth of comet a never reached 2")
}
