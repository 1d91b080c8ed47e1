package job

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// An extra topic's handler can route pushes through Dispatch, the way the
// IM fan-out does.
func TestHandleExtraTopicDispatches(t *testing.T) {
	a := startFakeComet(t, "a")
	mem, err := mq.NewMemory(mq.MemoryConfig{Partitions: 2, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	static := discovery.NewStatic(a.instance())
	defer static.Close()
	cons := mem.Consumer("job", mq.TopicPush, "extra")
	defer cons.Close()
	j, err := New(Config{}, Deps{Consumer: cons, Watcher: static, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	j.Handle("extra", func(ctx context.Context, m *mq.Message) error {
		return j.Dispatch(ctx, &logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{string(m.Key)}, Msg: m.Value})
	})
	if got := len(j.Topics()); got != 2 {
		t.Fatalf("topics = %v", j.Topics())
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(context.Background()) }()
	defer func() { _ = j.Close(); <-done }()

	if err := mem.Publish(context.Background(), "extra", []byte("dev-1"), []byte("payload")); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return len(a.pushedKeys()) == 1 }, "dispatched push never reached the comet")
	p, _, _ := a.snapshot()
	if p[0].Keys[0] != "dev-1" || string(p[0].Proto.Body) != "payload" {
		t.Fatalf("push = %v", p[0])
	}
}
