package logic_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

func redisStore(t *testing.T) session.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	prefix := "hubuimtest:logic:" + strings.ReplaceAll(t.Name(), "/", "_") + ":" + base64.RawURLEncoding.EncodeToString([]byte(time.Now().String()))[:12] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	s, err := session.NewRedis(c, session.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func servers(t *testing.T, s session.Store, keys ...string) []string {
	t.Helper()
	got, err := s.Servers(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestConnectLifecycleGRPC(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) session.Store
	}{
		{"redis", redisStore},
		{"memory", func(*testing.T) session.Store { return session.NewMemory() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, logic.Config{Conn: logic.ConnConfig{Heartbeat: 10 * time.Second}}, tc.store(t), nil)
			c := pb.NewLogicClient(e.grpcClient(t))
			ctx := context.Background()

			rep, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet-1", ConnId: "c1", Token: authBody(42, "dev-1", ""), RemoteAddr: "1.2.3.4:5"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Mid != 42 || rep.Key != "dev-1" || rep.RoomId != "live://1" || rep.Platform != "web" || rep.HeartbeatMs != 10000 {
				t.Fatalf("ConnectReply = %+v", rep)
			}
			if len(rep.Accepts) != 3 || rep.Accepts[0] != 1000 {
				t.Fatalf("default accepts = %v", rep.Accepts)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "comet-1" {
				t.Fatalf("route = %q", got)
			}

			// No key: logic generates a random url-safe one.
			rep2, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet-1", ConnId: "c2", Token: []byte(`{"mid":43,"accepts":[1005]}`)})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep2.Key) < 20 || strings.ContainsAny(rep2.Key, "+/=") {
				t.Fatalf("generated key %q", rep2.Key)
			}
			if len(rep2.Accepts) != 1 || rep2.Accepts[0] != 1005 {
				t.Fatalf("accepts = %v", rep2.Accepts)
			}
			rep3, _ := c.Connect(ctx, &pb.ConnectReq{Server: "comet-1", ConnId: "c3", Token: []byte(`{"mid":43}`)})
			if rep3.GetKey() == rep2.Key {
				t.Fatal("two generated keys are equal")
			}

			// The device reconnects to comet-2; comet-1's late Disconnect
			// must not remove the new route.
			if _, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet-2", ConnId: "c9", Token: authBody(42, "dev-1", "")}); err != nil {
				t.Fatal(err)
			}
			d, err := c.Disconnect(ctx, &pb.DisconnectReq{Mid: 42, Key: "dev-1", Server: "comet-1", ConnId: "c1"})
			if err != nil || d.Removed {
				t.Fatalf("late Disconnect = %v, %v; want removed=false", d, err)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "comet-2" {
				t.Fatalf("route after late disconnect = %q", got)
			}
			// The old connection's heartbeat changes nothing either.
			if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 42, Key: "dev-1", Server: "comet-1", ConnId: "c1"}); err != nil {
				t.Fatal(err)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "comet-2" {
				t.Fatalf("route after old heartbeat = %q", got)
			}
			if n := e.counter(t, "hubuim_logic_heartbeat_total", map[string]string{"result": "not_owner"}); n != 1 {
				t.Fatalf("not_owner heartbeats = %v", n)
			}
			d, err = c.Disconnect(ctx, &pb.DisconnectReq{Mid: 42, Key: "dev-1", Server: "comet-2", ConnId: "c9"})
			if err != nil || !d.Removed {
				t.Fatalf("Disconnect = %v, %v; want removed", d, err)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "" {
				t.Fatalf("route after disconnect = %q", got)
			}
			// A heartbeat of the removed connection, in flight when it
			// closed, does not bring the session back.
			if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 42, Key: "dev-1", Server: "comet-2", ConnId: "c9", Platform: "web"}); err != nil {
				t.Fatal(err)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "" {
				t.Fatalf("route after a late heartbeat = %q", got)
			}
			// A heartbeat re-creates a session that was lost (never
			// removed; e.g. Redis restarted).
			if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 42, Key: "dev-1", Server: "comet-2", ConnId: "c10", Platform: "web"}); err != nil {
				t.Fatal(err)
			}
			if got := servers(t, e.store, "dev-1"); got[0] != "comet-2" {
				t.Fatalf("route after re-creating heartbeat = %q", got)
			}
			devs, _ := e.store.Devices(ctx, []int64{42})
			if len(devs[42]) != 1 || devs[42][0].Platform != "web" || devs[42][0].ConnID != "c10" {
				t.Fatalf("devices = %+v", devs)
			}
			if n := e.counter(t, "hubuim_logic_connect_total", map[string]string{"result": "ok"}); n != 4 {
				t.Fatalf("ok connects = %v, want 4", n)
			}

			// Missing ids.
			for _, err := range []error{
				func() error {
					_, err := c.Connect(ctx, &pb.ConnectReq{ConnId: "x", Token: authBody(1, "", "")})
					return err
				}(),
				func() error { _, err := c.Disconnect(ctx, &pb.DisconnectReq{Server: "s", ConnId: "x"}); return err }(),
				func() error { _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Key: "k", Server: "s"}); return err }(),
				func() error { _, err := c.RenewOnline(ctx, &pb.OnlineReq{}); return err }(),
			} {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
			}
		})
	}
}

func TestConnectAuthRejections(t *testing.T) {
	e := newEnv(t, logic.Config{}, nil, nil)
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	cases := []struct {
		body   []byte
		code   codes.Code
		result string
	}{
		{[]byte(`not json`), codes.InvalidArgument, "bad_request"},
		{[]byte(`{"mid":-1}`), codes.InvalidArgument, "bad_request"},
		{authBody(42, "k", "bad"), codes.Unauthenticated, "unauthenticated"},
		{authBody(42, "k", "expired"), codes.Unauthenticated, "unauthenticated"},
		{authBody(42, "k", "audience"), codes.Unauthenticated, "unauthenticated"},
		{authBody(42, "k", "other"), codes.PermissionDenied, "denied"},
		{authBody(42, "k", "deny"), codes.PermissionDenied, "denied"},
		{authBody(42, "k", "down"), codes.Unavailable, "unavailable"},
		{authBody(42, "k", "weird"), codes.Internal, "error"},
	}
	for _, tc := range cases {
		_, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet", ConnId: "c", Token: tc.body})
		st, _ := status.FromError(err)
		if st.Code() != tc.code {
			t.Fatalf("body %s: code %v (%v), want %v", tc.body, st.Code(), err, tc.code)
		}
		// Nothing of the request or of other users leaks into the reason.
		if strings.Contains(st.Message(), "42") || strings.Contains(st.Message(), "banned") || st.Message() == "" {
			t.Fatalf("body %s: reason %q", tc.body, st.Message())
		}
	}
	for result, want := range map[string]float64{"bad_request": 2, "unauthenticated": 3, "denied": 2, "unavailable": 1, "error": 1, "ok": 0} {
		if got := e.counter(t, "hubuim_logic_connect_total", map[string]string{"result": result}); got != want {
			t.Fatalf("connect_total{result=%s} = %v, want %v", result, got, want)
		}
	}
	if got := servers(t, e.store, "k"); got[0] != "" {
		t.Fatal("a rejected connection got a session")
	}
}

func TestStoreDownGivesUnavailable(t *testing.T) {
	e := newEnv(t, logic.Config{}, failingStore{}, nil)
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	_, err1 := c.Connect(ctx, &pb.ConnectReq{Server: "s", ConnId: "c", Token: authBody(1, "k", "")})
	_, err2 := c.Heartbeat(ctx, &pb.HeartbeatReq{Key: "k", Server: "s", ConnId: "c"})
	_, err3 := c.Disconnect(ctx, &pb.DisconnectReq{Key: "k", Server: "s", ConnId: "c"})
	_, err4 := c.RenewOnline(ctx, &pb.OnlineReq{Server: "s"})
	for i, err := range []error{err1, err2, err3, err4} {
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: err = %v, want Unavailable", i, err)
		}
	}
	if err := e.l.PushKeys(ctx, 1000, []string{"k"}, nil); err == nil {
		t.Fatal("PushKeys with the store down succeeded")
	}
}

func TestRenewOnlineMergesAndCaches(t *testing.T) {
	const cache = time.Second
	e := newEnv(t, logic.Config{Conn: logic.ConnConfig{OnlineCache: cache}}, redisStore(t), nil)
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	if _, err := c.RenewOnline(ctx, &pb.OnlineReq{Server: "c1", RoomCount: map[string]int32{"live://1": 3}}); err != nil {
		t.Fatal(err)
	}
	rep, err := c.RenewOnline(ctx, &pb.OnlineReq{Server: "c2", RoomCount: map[string]int32{"live://1": 2, "live://2": 1}})
	if err != nil {
		t.Fatal(err)
	}
	// The first call cached {live://1: 3}; the cache may still serve it.
	if n := rep.AllRoomCount["live://1"]; n != 3 && n != 5 {
		t.Fatalf("merged live://1 = %d", n)
	}
	loads := e.counter(t, "hubuim_logic_online_loads_total", map[string]string{"result": "ok"})
	start := time.Now()
	for range 20 {
		if _, err := c.RenewOnline(ctx, &pb.OnlineReq{Server: "c1", RoomCount: map[string]int32{"live://1": 3}}); err != nil {
			t.Fatal(err)
		}
	}
	// At most one load per cache period (plus the period in progress).
	allowed := float64(time.Since(start)/cache) + 1
	if after := e.counter(t, "hubuim_logic_online_loads_total", map[string]string{"result": "ok"}); after-loads > allowed {
		t.Fatalf("20 renewals loaded the counts %v times, allowed %v", after-loads, allowed)
	}
	eventually(t, "merged counts", func() bool {
		rep, err := c.RenewOnline(ctx, &pb.OnlineReq{Server: "c1", RoomCount: map[string]int32{"live://1": 3}})
		return err == nil && rep.AllRoomCount["live://1"] == 5 && rep.AllRoomCount["live://2"] == 1
	})
}

func TestReceiveHandlers(t *testing.T) {
	handlers := map[int32]logic.ReceiveHandler{
		protocol.OpMsgSend: func(_ context.Context, req *pb.ReceiveReq) (*protocol.Proto, error) {
			return &protocol.Proto{Ver: 1, Op: protocol.OpMsgSendAck, Seq: req.Proto.Seq, Body: []byte("ack")}, nil
		},
		protocol.OpSync: func(context.Context, *pb.ReceiveReq) (*protocol.Proto, error) {
			return nil, status.Error(codes.ResourceExhausted, "slow down")
		},
	}
	e := newEnv(t, logic.Config{}, nil, handlers)
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	rep, err := c.Receive(ctx, &pb.ReceiveReq{Key: "k", Proto: &protocol.Proto{Op: protocol.OpMsgSend, Seq: 7}})
	if err != nil || rep.Proto.GetOp() != protocol.OpMsgSendAck || rep.Proto.GetSeq() != 7 {
		t.Fatalf("Receive(MsgSend) = %v, %v", rep, err)
	}
	rep, err = c.Receive(ctx, &pb.ReceiveReq{Key: "k", Proto: &protocol.Proto{Op: 4242}})
	if err != nil || rep.Proto != nil {
		t.Fatalf("Receive(unhandled) = %v, %v; want an empty reply", rep, err)
	}
	if _, err := c.Receive(ctx, &pb.ReceiveReq{Key: "k", Proto: &protocol.Proto{Op: protocol.OpSync}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Receive(failing handler) err = %v", err)
	}
	if _, err := c.Receive(ctx, &pb.ReceiveReq{Key: "k"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Receive(no proto) err = %v", err)
	}
	if n := e.counter(t, "hubuim_logic_receive_total", map[string]string{"result": "unhandled"}); n != 1 {
		t.Fatalf("unhandled = %v", n)
	}
}

func TestOnReplaced(t *testing.T) {
	var got []session.Session
	e := newEnvDeps(t, logic.Config{}, nil, logic.Deps{OnReplaced: func(_ context.Context, prev session.Session) {
		got = append(got, prev) // Connect calls it synchronously
	}})
	ctx := context.Background()
	for _, conn := range []struct{ server, id string }{{"comet-1", "a"}, {"comet-1", "a"}, {"comet-2", "b"}} {
		if _, err := e.l.Connect(ctx, &pb.ConnectReq{Server: conn.server, ConnId: conn.id, Token: authBody(3, "dev", "")}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0].Server != "comet-1" || got[0].ConnID != "a" || got[0].Mid != 3 || got[0].Key != "dev" {
		t.Fatalf("OnReplaced calls = %+v, want one for comet-1/a", got)
	}
}

// Devices of one user connecting at once make one OnUserOnline call, and
// leaving at once one OnUserOffline (found by review: presence counted the
// user's devices after the write, and saw two devices or none).
func TestUserOnlineOfflineOncePerTransition(t *testing.T) {
	var online, offline atomic.Int32
	e := newEnvDeps(t, logic.Config{}, nil, logic.Deps{
		OnUserOnline:  func(context.Context, session.Session, int64) { online.Add(1) },
		OnUserOffline: func(context.Context, session.Session, int64) { offline.Add(1) },
	})
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	const devices, rounds = 4, 5
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range devices {
			wg.Go(func() {
				key := fmt.Sprintf("r%d-d%d", round, i)
				if _, err := c.Connect(ctx, &pb.ConnectReq{Server: "s", ConnId: key, Token: authBody(9, key, "")}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for i := range devices {
			wg.Go(func() {
				key := fmt.Sprintf("r%d-d%d", round, i)
				if _, err := c.Disconnect(ctx, &pb.DisconnectReq{Mid: 9, Key: key, Server: "s", ConnId: key}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if on, off := online.Load(), offline.Load(); on != int32(round+1) || off != int32(round+1) {
			t.Fatalf("after round %d: %d online and %d offline calls, want %d each", round, on, off, round+1)
		}
	}
}

// A user whose last session expires without a Disconnect (its comet died)
// is reported offline once by the sweep; a user that disconnected is not
// reported a second time, nor one whose device still heartbeats.
func TestExpiredSessionReportsOffline(t *testing.T) {
	var mu sync.Mutex
	offline := map[int64][]session.Session{}
	var online []int64
	const ttl = time.Second // user 3's heartbeats (every 50 ms) must come within it
	cfg := logic.Config{Conn: logic.ConnConfig{Heartbeat: 100 * time.Millisecond, SessionTTL: ttl,
		ExpirySweep: 50 * time.Millisecond}}
	e := newEnvDeps(t, cfg, nil, logic.Deps{
		OnUserOffline: func(_ context.Context, s session.Session, _ int64) {
			mu.Lock()
			defer mu.Unlock()
			offline[s.Mid] = append(offline[s.Mid], s)
		},
		OnUserOnline: func(_ context.Context, s session.Session, _ int64) {
			mu.Lock()
			defer mu.Unlock()
			online = append(online, s.Mid)
		},
	})
	c := pb.NewLogicClient(e.grpcClient(t))
	ctx := context.Background()
	for mid := int64(1); mid <= 3; mid++ {
		key := fmt.Sprint("dev", mid)
		if _, err := c.Connect(ctx, &pb.ConnectReq{Server: "comet-1", ConnId: key, Token: authBody(mid, key, "")}); err != nil {
			t.Fatal(err)
		}
	}
	// 1 is left to expire; 2 disconnects; 3 heartbeats.
	if _, err := c.Disconnect(ctx, &pb.DisconnectReq{Mid: 2, Key: "dev2", Server: "comet-1", ConnId: "dev2"}); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(2 * ttl)
	for time.Now().Before(stop) {
		if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 3, Key: "dev3", Server: "comet-1", ConnId: "dev3"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitfor.Until(t, 5*time.Second, "user 1 reported offline", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(offline[1]) > 0
	})
	time.Sleep(200 * time.Millisecond) // a few more sweeps
	// The comet was only cut off: its next heartbeat brings user 1 back
	// online (found by review: presence kept it offline).
	if _, err := c.Heartbeat(ctx, &pb.HeartbeatReq{Mid: 1, Key: "dev1", Server: "comet-1", ConnId: "dev1"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(online, []int64{1, 2, 3, 1}) {
		t.Fatalf("online calls %v, want the three connects and user 1 again", online)
	}
	if got := offline[1]; len(got) != 1 || got[0].Key != "dev1" || got[0].Server != "comet-1" {
		t.Fatalf("user 1 reports: %+v, want one for dev1", got)
	}
	if len(offline[2]) != 1 { // the Disconnect's own
		t.Fatalf("user 2 reported %d times, want once (by its Disconnect)", len(offline[2]))
	}
	if len(offline[3]) != 0 {
		t.Fatalf("user 3 (heartbeating) reported offline: %+v", offline[3])
	}
	if v := e.counter(t, "hubuim_logic_expired_users_total", nil); v != 1 {
		t.Fatalf("expired_users_total = %v, want 1", v)
	}
}
