package logic_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/logic/session/sessiontest"
)

// TestRedisDownGRPC kills logic's Redis: comets get Unavailable with a
// clear reason (no panic, no hang), and logic serves again once Redis is
// back, heartbeats re-creating the lost sessions.
func TestRedisDownGRPC(t *testing.T) {
	srv := sessiontest.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := session.NewRedis(rdb, session.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, logic.Config{}, store, nil)
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	connect := func() error {
		_, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet-1", ConnId: "c1", Token: authBody(5, "dev", "")})
		return err
	}
	if err := connect(); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	start := time.Now()
	err = connect()
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != "session store unavailable" {
		t.Fatalf("Connect with Redis down: %v", err)
	}
	if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 5, Key: "dev", Server: "comet-1", ConnId: "c1"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Heartbeat with Redis down: %v", err)
	}
	if err := e.l.PushKeys(ctx, 1000, []string{"dev"}, nil); err == nil {
		t.Fatal("push with Redis down succeeded")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("failing took %v", el)
	}

	srv.Start()
	eventually(t, "Heartbeat to succeed after Redis restart", func() bool {
		_, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 5, Key: "dev", Server: "comet-1", ConnId: "c1", Platform: "web"})
		return err == nil
	})
	if err := e.l.PushKeys(ctx, 1000, []string{"dev"}, []byte("back")); err != nil {
		t.Fatal(err)
	}
	if recs := e.producer.take(); len(recs) != 1 || recs[0].msg.Server != "comet-1" {
		t.Fatalf("push after recovery published %+v", recs)
	}
}
