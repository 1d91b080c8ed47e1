package main

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
)

type recordingComet struct {
	comet.UnimplementedCometServer
	mu   sync.Mutex
	keys []string
}

func (c *recordingComet) PushMsg(_ context.Context, req *comet.PushMsgReq) (*comet.PushMsgReply, error) {
	c.mu.Lock()
	c.keys = append(c.keys, req.Keys...)
	c.mu.Unlock()
	return &comet.PushMsgReply{}, nil
}

func (c *recordingComet) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// The whole process wiring: Kafka (kfake) → job → a gRPC comet; a cancelled
// context (what SIGTERM does) stops it cleanly.
func TestServe(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, mq.TopicPush, mq.TopicMessage), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordingComet{}
	srv := grpc.NewServer()
	comet.RegisterCometServer(srv, rc)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	cfg := Config{Group: "g", Discovery: DiscoveryConfig{Type: DiscoveryStatic, Comets: []string{"c1=" + lis.Addr().String()}}}
	cfg.Kafka = mq.KafkaConfig{Brokers: cluster.ListenAddrs(), SessionTimeout: 2 * time.Second, HeartbeatInterval: 300 * time.Millisecond, RebalanceTimeout: 2 * time.Second}
	cfg.Admin.Addr = "127.0.0.1:0"
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.Redis = app.RedisConfig{Addrs: []string{testenv.RedisAddr(t)}, Prefix: "jobtest:" + suffix + ":"}
	cfg.Postgres = store.PostgresConfig{DSN: testenv.PostgresDSN(t), Schema: "jobtest_" + suffix}
	reg := prometheus.NewRegistry()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler), reg, reg) }()

	prod, err := mq.NewKafkaProducer(cfg.Kafka, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	b, _ := proto.Marshal(&logic.PushMsg{Type: logic.PushMsg_PUSH, Operation: 1001, Server: "c1", Keys: []string{"dev"}, Msg: []byte("x")})
	if err := prod.Publish(context.Background(), mq.TopicPush, []byte("dev"), b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for rc.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("push never reached the comet")
		}
		select {
		case err := <-done:
			t.Fatalf("serve stopped early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}
