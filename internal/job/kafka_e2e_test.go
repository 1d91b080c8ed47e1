package job

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
)

// End to end over Kafka (in-process kfake broker on real TCP): records
// reach the comet, and a job restarted in the same group resumes after what
// the first one handed off, redelivering nothing.
func TestKafkaEndToEnd(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, mq.TopicPush), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	kcfg := mq.KafkaConfig{
		Brokers: cluster.ListenAddrs(), SessionTimeout: 2 * time.Second, HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout: 2 * time.Second, AutoCommitInterval: 100 * time.Millisecond, ErrorBackoff: 50 * time.Millisecond,
	}
	prod, err := mq.NewKafkaProducer(kcfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close() })

	a := startFakeComet(t, "a")
	static := discovery.NewStatic(a.instance())
	t.Cleanup(func() { _ = static.Close() })

	devices := []string{"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"}
	publish := func(round int) {
		for _, d := range devices {
			b, _ := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: testOp, Server: "a", Keys: []string{d}, Msg: []byte(strconv.Itoa(round))})
			if err := prod.Publish(context.Background(), mq.TopicPush, []byte(d), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := func() (stop func()) {
		cons, err := mq.NewKafkaConsumer(kcfg, []string{mq.TopicPush}, "job", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		j, err := New(Config{}, Deps{Consumer: cons, Watcher: static, Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- j.Run(context.Background()) }()
		return func() {
			_ = j.Close()
			<-done
			_ = cons.Close()
		}
	}

	const rounds = 5
	stop := start()
	for r := range rounds {
		publish(r)
	}
	eventually(t, func() bool { return len(a.pushedKeys()) == rounds*len(devices) }, "first job: %d of %d pushes", len(a.pushedKeys()), rounds*len(devices))
	stop()

	stop = start()
	defer stop()
	publish(rounds)
	// A redelivered record would arrive before the new one of its device.
	eventually(t, func() bool {
		p, _, _ := a.snapshot()
		seen := 0
		for _, r := range p {
			if string(r.Proto.Body) == strconv.Itoa(rounds) {
				seen++
			}
		}
		return seen == len(devices)
	}, "second job did not deliver the new round")
	p, _, _ := a.snapshot()
	if len(p) != (rounds+1)*len(devices) {
		t.Fatalf("comet got %d pushes, want %d: handed-off records were redelivered", len(p), (rounds+1)*len(devices))
	}
	next := map[string]int{}
	for _, r := range p {
		d := r.Keys[0]
		if string(r.Proto.Body) != strconv.Itoa(next[d]) {
			t.Fatalf("device %s: got round %s, want %d", d, r.Proto.Body, next[d])
		}
		next[d]++
	}
}
