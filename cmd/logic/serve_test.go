package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/testenv"
)

// TestServeEndToEnd runs the whole command (shipped config, JWT auth, real
// Redis, a Kafka-protocol broker): a comet connects with a signed token, a
// backend pushes over HTTP, the record arrives on the push topic, and
// cancelling the context stops everything.
type addrs struct{ grpc, http, admin net.Addr }

const jwtSecret = apptest.JWTSecret

// startLogic runs serve with the shipped config, loopback ports and the
// test services (a fresh apptest.Env: Redis prefix, PostgreSQL schema, etcd
// prefix and Kafka broker of its own), plus env overrides. stop cancels it
// and checks it returned nil.
func startLogic(t *testing.T, env map[string]string) (a addrs, e *apptest.Env, stop func()) {
	t.Helper()
	e = apptest.NewEnv(t)
	base := map[string]string{
		"AUTH_JWT_SECRET":     jwtSecret,
		"PUSH_SECRET":         "push-secret",
		"REDIS_ADDRS":         e.RedisAddr,
		"REDIS_PREFIX":        e.RedisPrefix,
		"POSTGRES_DSN":        e.Postgres.DSN,
		"POSTGRES_SCHEMA":     e.Postgres.Schema,
		"KAFKA_BROKERS":       strings.Join(e.Kafka, ","),
		"DISCOVERY_ENDPOINTS": strings.Join(e.Etcd, ","),
		"DISCOVERY_PREFIX":    e.DiscoveryPrefix(),
		"DISCOVERY_TTL":       "2s",
		"IDGEN_PREFIX":        e.EtcdPrefix,
		"IDGEN_TTL":           "2s",
		"ID":                  "logic-" + e.ID,
		"ADVERTISE_HOST":      "127.0.0.1",
		"GRPC_ADDR":           "127.0.0.1:0",
		"HTTP_ADDR":           "127.0.0.1:0",
		"ADMIN_ADDR":          "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT":    "5s",
	}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		t.Setenv(logicconf.EnvPrefix+"_"+k, v)
	}
	fc, err := logicconf.Load("../../configs/logic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, fc, e.Log, reg, reg, func(g, h, adm net.Addr) { ready <- addrs{g, h, adm} })
	}()
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(apptest.WaitTimeout):
		cancel()
		t.Fatal("serve did not start")
	}
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve returned %v", err)
			}
		case <-time.After(apptest.WaitTimeout):
			t.Fatal("serve did not stop")
		}
	}
	t.Cleanup(stop)
	return a, e, stop
}

// TestServeIM runs the command with the shipped config against the real
// services: it registers in etcd, a comet finds it there
// ("hubuim:///logic"), two users connect through that comet with JWTs, a
// 1:1 message is sent (seq from Redis, id from the etcd-leased worker id,
// stored in PostgreSQL, published to Kafka) and the job delivers it;
// /readyz is 200 while serving and the command stops cleanly.
func TestServeIM(t *testing.T) {
	a, e, stop := startLogic(t, nil)
	apptest.WaitReady(t, a.admin.String())
	e.StartJob(t)
	tcp := e.StartComet(t, "comet-"+e.ID).TCP
	alice, bob := apptest.Dial(t, 1001, tcp), apptest.Dial(t, 1002, tcp)
	apptest.SendAndReceive(t, alice, bob)
	apptest.SendAndReceive(t, bob, alice)

	// The client IM HTTP API is served too.
	tok, err := auth.SignHS256([]byte(jwtSecret), 1002, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  int
	}{{tok, http.StatusOK}, {"", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.http.String()+"/im/v1/groups", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("GET /im/v1/groups (token %t): %d, want %d", tc.token != "", resp.StatusCode, tc.want)
		}
	}
	// Presence is served: alice subscribes to bob, sees him online, and
	// gets his offline event when he leaves (the binary shipped without
	// a presence store once: 404, no events).
	if body := apptest.SubscribePresence(t, a.http.String(), 1001, 1002); !strings.Contains(body, `"online":true`) {
		t.Fatalf("presence subscribe: %s, want bob online", body)
	}
	bob.Close()
	apptest.ExpectPresence(t, alice, 1002, false)
	alice.Close()
	stop()
	if s := apptest.ReadyStatus(a.admin.String()); s != 0 {
		t.Fatalf("admin still answers %d after stop", s)
	}
}

// TestServeEndToEnd runs the whole command (shipped config, JWT auth, real
// Redis, a Kafka-protocol broker): a comet connects with a signed token, a
// backend pushes over HTTP, the record arrives on the push topic, and
// cancelling the context stops everything.
func TestServeEndToEnd(t *testing.T) {
	a, e, stop := startLogic(t, nil)
	brokers := e.Kafka
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	cc, err := grpc.NewClient(a.grpc.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	lc := pb.NewLogicClient(cc)
	token, err := auth.SignHS256([]byte(jwtSecret), 77, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Appendf(nil, `{"mid":77,"key":"e2e-key","room_id":"live://1","token":%q}`, token)
	rep, err := lc.Connect(ctx, &pb.ConnectReq{Server: "comet-e2e", ConnId: "c1", Token: body})
	if err != nil || rep.Mid != 77 || rep.Key != "e2e-key" {
		t.Fatalf("Connect = %v, %v", rep, err)
	}
	forged, _ := auth.SignHS256([]byte(strings.Repeat("x", 32)), 77, "", time.Minute)
	_, err = lc.Connect(ctx, &pb.ConnectReq{Server: "comet-e2e", ConnId: "c2", Token: fmt.Appendf(nil, `{"mid":77,"token":%q}`, forged)})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Connect with a forged token: %v", err)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+a.http.String()+"/goim/push/keys?operation=1000&keys=e2e-key", strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer push-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(raw), `"code":0`) {
		t.Fatalf("push: %d %s", resp.StatusCode, raw)
	}

	cons, err := mq.NewKafkaConsumer(mq.KafkaConfig{Brokers: brokers, HeartbeatInterval: 300 * time.Millisecond},
		[]string{mq.TopicPush}, "e2e", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *pb.PushMsg, 1)
	var once sync.Once
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	go func() {
		_ = cons.Run(cctx, func(_ context.Context, m *mq.Message) error {
			pm := new(pb.PushMsg)
			if err := proto.Unmarshal(m.Value, pm); err != nil {
				return nil
			}
			if string(m.Key) == "comet-e2e" {
				once.Do(func() { got <- pm })
			}
			return nil
		})
	}()
	select {
	case pm := <-got:
		if pm.Type != pb.PushMsg_PUSH || pm.Server != "comet-e2e" || len(pm.Keys) != 1 || pm.Keys[0] != "e2e-key" || string(pm.Msg) != "hello" {
			t.Fatalf("record = %+v", pm)
		}
	case <-cctx.Done():
		t.Fatal("no record on the push topic")
	}
	ccancel()
	_ = cons.Close()
	stop()
}

// TestReadinessFollowsRedis: /readyz turns 503 while Redis is down and 200
// again once it is back, without a restart of logic.
func TestReadinessFollowsRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	a, _, _ := startLogic(t, map[string]string{"REDIS_ADDRS": rs.Addr})
	apptest.WaitReady(t, a.admin.String())
	rs.Stop()
	apptest.WaitFor(t, "/readyz 503 while Redis is down", func() bool {
		return apptest.ReadyStatus(a.admin.String()) == http.StatusServiceUnavailable
	})
	rs.Start()
	apptest.WaitFor(t, "/readyz 200 once Redis is back", func() bool {
		return apptest.ReadyStatus(a.admin.String()) == http.StatusOK
	})
}
