package comet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/config"
)

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"buckets not power of two", Config{Buckets: 3}, "buckets"},
		{"negative timeout", Config{HandshakeTimeout: -1}, "handshake_timeout"},
		{"negative pollers", Config{TCPPollers: -1}, "tcp_pollers"},
		{"negative deep workers", Config{DeepWorkers: -1}, "deep_workers"},
		{"queue smaller than a frame", Config{MaxBody: 1024, MaxQueueBytes: 100}, "max_queue_bytes"},
		{"tls without cert", Config{WSSAddr: ":0"}, "tls_cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, Deps{Logic: startLogic(t, &fakeLogic{})})
			var fe *config.FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
	if _, err := New(Config{}, Deps{}); !errors.Is(err, ErrNoLogic) {
		t.Fatalf("missing logic: %v", err)
	}
}

func TestAuthOK(t *testing.T) {
	e := startServer(t, nil)
	for _, tr := range e.transports() {
		key := tr.name + "-dev"
		c := tr.dial(t, tr.addr)
		r := e.auth(t, c, authBody{Mid: 42, Key: key, RoomID: "live://1"})
		if r.Mid != 42 || r.Key != key || r.RoomID != "live://1" || r.HeartbeatMS != DefaultHeartbeatInterval.Milliseconds() {
			t.Fatalf("auth reply %+v", r)
		}
		connID := e.logic.connIDOf(key)
		if connID == "" {
			t.Fatal("logic saw no Connect")
		}
	}
	eventually(t, "2 conns", func() bool { return e.s.Conns() == 2 })
	e.logic.mu.Lock()
	req := e.logic.connects[0]
	e.logic.mu.Unlock()
	if req.GetServer() != "comet-test" || req.GetRemoteAddr() == "" || !strings.Contains(string(req.GetToken()), `"mid":42`) {
		t.Fatalf("connect req %v", req)
	}
	if e.logic.connIDOf("tcp-dev") == e.logic.connIDOf("ws-dev") {
		t.Fatal("conn ids not unique")
	}
}

func TestAuthRejected(t *testing.T) {
	e := startServer(t, nil)
	c := dialTCP(t, e.s.Addrs().TCP)
	c.send(protocol.OpAuth, 1, []byte(`{"mid":1,"key":"k","token":"bad"}`))
	f := c.expect(protocol.OpDisconnectReply)
	if !strings.Contains(string(f.Body), "bad token") {
		t.Fatalf("reason %q", f.Body)
	}
	c.expectClosed()
	if e.s.Conns() != 0 {
		t.Fatal("rejected connection registered")
	}
}

func TestFirstPacketNotAuth(t *testing.T) {
	e := startServer(t, nil)
	for _, tr := range e.transports() {
		c := tr.dial(t, tr.addr)
		c.send(protocol.OpHeartbeat, 1, nil)
		f := c.expect(protocol.OpDisconnectReply)
		if string(f.Body) != ErrNotAuth.Error() {
			t.Fatalf("reason %q", f.Body)
		}
		c.expectClosed()
	}
}

func TestNoAuthWithinTimeout(t *testing.T) {
	e := startServer(t, func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond })
	c := dialTCP(t, e.s.Addrs().TCP)
	f := c.expect(protocol.OpDisconnectReply)
	if !strings.Contains(string(f.Body), "timeout") {
		t.Fatalf("reason %q", f.Body)
	}
	c.expectClosed()
	eventually(t, "no readers", func() bool { return e.s.readers.Load() == 0 })
}

func TestHeartbeatReplyCount(t *testing.T) {
	e := startServer(t, func(c *Config) { c.Buckets = 1 })
	a := e.tcpClient(t, "a", "room://1")
	_ = e.tcpClient(t, "b", "room://1")
	_ = e.tcpClient(t, "c", "room://2")
	count := func() int32 {
		a.send(protocol.OpHeartbeat, 5, nil)
		f := a.expect(protocol.OpHeartbeatReply)
		if f.Seq != 5 || len(f.Body) != 4 {
			t.Fatalf("heartbeat reply seq %d body %x", f.Seq, f.Body)
		}
		return int32(binary.BigEndian.Uint32(f.Body))
	}
	if n := count(); n != 2 {
		t.Fatalf("local count %d, want 2", n)
	}
	// The cluster-wide count from RenewOnline wins.
	e.logic.mu.Lock()
	e.logic.onlineMul = 10
	e.logic.mu.Unlock()
	e.s.renewOnline()
	if n := count(); n != 20 {
		t.Fatalf("cluster count %d, want 20", n)
	}
	e.logic.mu.Lock()
	got := e.logic.online[0].GetRoomCount()
	e.logic.mu.Unlock()
	if got["room://1"] != 2 || got["room://2"] != 1 {
		t.Fatalf("RenewOnline sent %v", got)
	}
}

func TestHeartbeatTimeoutCloses(t *testing.T) {
	e := startServer(t, nil)
	e.logic.heartbeatMS = 50
	c := e.tcpClient(t, "k", "")
	connID := e.logic.connIDOf("k")
	// Heartbeats keep it open past the timeout...
	for i := 0; i < 5; i++ {
		time.Sleep(50 * time.Millisecond)
		c.send(protocol.OpHeartbeat, int32(i), nil)
		c.expect(protocol.OpHeartbeatReply)
	}
	// ...silence closes it.
	f := c.expect(protocol.OpDisconnectReply)
	if !strings.Contains(string(f.Body), "timeout") {
		t.Fatalf("reason %q", f.Body)
	}
	c.expectClosed()
	eventually(t, "disconnect", func() bool { return e.logic.disconnectsFor(connID) == 1 })
	if e.s.Conns() != 0 {
		t.Fatalf("conns %d", e.s.Conns())
	}
}

func TestLogicHeartbeatThrottled(t *testing.T) {
	e := startServer(t, func(c *Config) { c.LogicHeartbeat = time.Hour })
	c := e.tcpClient(t, "k", "")
	for i := 0; i < 10; i++ {
		c.send(protocol.OpHeartbeat, int32(i), nil)
		c.expect(protocol.OpHeartbeatReply)
	}
	e.logic.mu.Lock()
	n := e.logic.heartbeats
	e.logic.mu.Unlock()
	if n != 0 {
		t.Fatalf("logic Heartbeat called %d times within LogicHeartbeat", n)
	}

	e2 := startServer(t, func(c *Config) { c.LogicHeartbeat = time.Nanosecond })
	c2 := e2.tcpClient(t, "k", "")
	for i := 0; i < 3; i++ {
		c2.send(protocol.OpHeartbeat, int32(i), nil)
		c2.expect(protocol.OpHeartbeatReply)
	}
	eventually(t, "3 logic heartbeats", func() bool {
		e2.logic.mu.Lock()
		defer e2.logic.mu.Unlock()
		return e2.logic.heartbeats == 3
	})
}

func TestPushRespectsAccepts(t *testing.T) {
	e := startServer(t, nil)
	a := e.tcpClient(t, "a", "", 1001)
	b := e.wsClient(t, "b", "")
	missing := func(keys ...string) []string {
		r, err := e.s.API().PushMsg(context.Background(), &cometapi.PushMsgReq{
			Keys: keys, ProtoOp: 1001, Proto: &protocol.Proto{Op: 1001, Seq: 3, Body: []byte("biz")},
		})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetMissingKeys()
	}
	if m := missing("a", "b", "nobody"); len(m) != 1 || m[0] != "nobody" {
		t.Fatalf("missing keys %v", m)
	}
	f := a.expect(1001)
	if string(f.Body) != "biz" || f.Seq != 3 {
		t.Fatalf("push %+v", f)
	}
	e.marker(t, b, "b") // b does not accept 1001: the marker is its next frame
	e.marker(t, a, "a")
	if _, err := e.s.API().PushMsg(context.Background(), &cometapi.PushMsgReq{Keys: []string{"a"}}); err == nil {
		t.Fatal("push without proto accepted")
	}
}

func TestRoomBroadcastExactlyOnce(t *testing.T) {
	e := startServer(t, func(c *Config) { c.Buckets = 8 })
	const members = 24
	var in, out []*client
	for i := 0; i < members; i++ {
		key := "m" + string(rune('a'+i))
		if i%2 == 0 {
			in = append(in, e.tcpClient(t, key, "chat://9"))
		} else {
			in = append(in, e.wsClient(t, key, "chat://9"))
		}
	}
	out = append(out, e.tcpClient(t, "other", "chat://10"), e.tcpClient(t, "none", ""))
	r, err := e.s.API().Rooms(context.Background(), &cometapi.RoomsReq{})
	if err != nil || r.GetRooms()["chat://9"] != members || r.GetRooms()["chat://10"] != 1 {
		t.Fatalf("rooms %v %v", r.GetRooms(), err)
	}
	_, err = e.s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{
		RoomId: "chat://9", Proto: &protocol.Proto{Op: 1005, Body: []byte("hello room")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range in {
		f := c.expect(1005)
		if string(f.Body) != "hello room" {
			t.Fatalf("member %d got %q", i, f.Body)
		}
		e.marker(t, c, "m"+string(rune('a'+i))) // and no second copy
	}
	e.marker(t, out[0], "other")
	e.marker(t, out[1], "none")
}

func TestBroadcastAll(t *testing.T) {
	e := startServer(t, nil)
	yes := []*client{e.tcpClient(t, "y1", "", 1001), e.wsClient(t, "y2", "r", 1001)}
	no := e.tcpClient(t, "n1", "")
	for _, speed := range []int32{0, 1000} {
		_, err := e.s.API().Broadcast(context.Background(), &cometapi.BroadcastReq{
			ProtoOp: 1001, Speed: speed, Proto: &protocol.Proto{Op: 1001, Body: []byte("all")},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range yes {
			if f := c.expect(1001); string(f.Body) != "all" {
				t.Fatalf("body %q", f.Body)
			}
		}
		e.marker(t, no, "n1")
	}
}

func TestDuplicateKeyKicksOld(t *testing.T) {
	e := startServer(t, nil)
	old := e.tcpClient(t, "dev", "room")
	oldID := e.logic.connIDOf("dev")
	nu := e.wsClient(t, "dev", "room")
	newID := e.logic.connIDOf("dev")
	f := old.expect(protocol.OpKick)
	var k protocol.Kick
	if err := proto.Unmarshal(f.Body, &k); err != nil || k.GetReason() != protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN {
		t.Fatalf("kick %v %v", &k, err)
	}
	old.expectClosed()
	eventually(t, "old disconnect", func() bool { return e.logic.disconnectsFor(oldID) == 1 })
	if e.logic.disconnectsFor(newID) != 0 {
		t.Fatal("new connection disconnected")
	}
	e.marker(t, nu, "dev") // the key now routes to the new connection
	if e.s.Conns() != 1 {
		t.Fatalf("conns %d", e.s.Conns())
	}
	r, _ := e.s.API().Rooms(context.Background(), &cometapi.RoomsReq{})
	if r.GetRooms()["room"] != 1 {
		t.Fatalf("rooms %v", r.GetRooms())
	}
}

func TestChangeRoomSubUnsub(t *testing.T) {
	e := startServer(t, nil)
	c := e.tcpClient(t, "k", "room://a")
	c.send(protocol.OpChangeRoom, 7, []byte("room://b"))
	if f := c.expect(protocol.OpChangeRoomReply); f.Seq != 7 || string(f.Body) != "room://b" {
		t.Fatalf("change room reply %+v", f)
	}
	r, _ := e.s.API().Rooms(context.Background(), &cometapi.RoomsReq{})
	if len(r.GetRooms()) != 1 || r.GetRooms()["room://b"] != 1 {
		t.Fatalf("rooms %v", r.GetRooms())
	}
	if _, err := e.s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{
		RoomId: "room://b", Proto: &protocol.Proto{Op: 1001, Body: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	c.expect(1001)

	c.send(protocol.OpSub, 8, []byte("1002, 1003,junk"))
	if f := c.expect(protocol.OpSubReply); f.Seq != 8 {
		t.Fatalf("sub reply %+v", f)
	}
	e.push(t, "k", 1002, "x")
	c.expect(1002)
	c.send(protocol.OpUnsub, 9, []byte("1002"))
	c.expect(protocol.OpUnsubReply)
	e.push(t, "k", 1002, "x")
	e.push(t, "k", 1003, "y")
	if f := c.expect(1003); string(f.Body) != "y" {
		t.Fatalf("got %q", f.Body)
	}
	c.send(protocol.OpChangeRoom, 10, nil) // leave
	c.expect(protocol.OpChangeRoomReply)
	r, _ = e.s.API().Rooms(context.Background(), &cometapi.RoomsReq{})
	if len(r.GetRooms()) != 0 {
		t.Fatalf("rooms %v", r.GetRooms())
	}
}

func TestReceiveSameSeq(t *testing.T) {
	e := startServer(t, nil)
	for _, c := range []*client{e.tcpClient(t, "t", ""), e.wsClient(t, "w", "")} {
		c.send(protocol.OpSendMsg, 77, []byte("hi"))
		f := c.expect(protocol.OpSendMsgReply)
		if f.Seq != 77 || string(f.Body) != "echo:hi" {
			t.Fatalf("reply %+v", f)
		}
		// An op logic answers without a reply produces nothing.
		c.send(protocol.OpMsgDeliveredAck, 78, nil)
		c.send(protocol.OpHeartbeat, 79, nil)
		if f := c.expect(protocol.OpHeartbeatReply); f.Seq != 79 {
			t.Fatalf("seq %d", f.Seq)
		}
	}
}

func TestSlowConsumerKicked(t *testing.T) {
	e := startServer(t, func(c *Config) {
		c.MaxBody = 1024
		c.MaxQueueBytes = 16 << 10
		c.WriteTimeout = 200 * time.Millisecond
		c.KickWriteTimeout = 100 * time.Millisecond
	})
	c := e.tcpClient(t, "slow", "")
	connID := e.logic.connIDOf("slow")
	body := strings.Repeat("x", 1000)
	frame, _ := encodeProto(&protocol.Proto{Op: protocol.OpMsgPush, Body: []byte(body)})
	cn := e.s.bucketFor("slow").get("slow")
	var err error
	deadline := time.Now().Add(waitFor)
	for i := 0; err == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("never kicked after %d pushes", i)
		}
		err = cn.enqueue(frame) // the client never reads
	}
	if !errors.Is(err, ErrSlowConsumer) && !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
	eventually(t, "disconnect", func() bool { return e.logic.disconnectsFor(connID) == 1 })
	eventually(t, "readers gone", func() bool { return e.s.readers.Load() == 0 && e.s.Conns() == 0 })
	if got := counterValue(t, e.s.m.slowConsumers); got != 1 {
		t.Fatalf("slow consumer metric %v", got)
	}
	c.expectClosed()
}

func TestMalformedFrames(t *testing.T) {
	e := startServer(t, func(c *Config) { c.MaxBody = 1024 })
	hdr := func(packLen uint32, headerLen uint16) []byte {
		b := make([]byte, protocol.HeaderLen)
		binary.BigEndian.PutUint32(b, packLen)
		binary.BigEndian.PutUint16(b[4:], headerLen)
		binary.BigEndian.PutUint32(b[8:], uint32(protocol.OpHeartbeat))
		return b
	}
	for i, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"bad header len", hdr(16, 20), protocol.ErrHeaderLen},
		{"pack len too small", hdr(8, 16), protocol.ErrPackLen},
		{"pack len too big", hdr(16+1025, 16), protocol.ErrPackLen},
		{"pack len huge", hdr(1<<31, 16), protocol.ErrPackLen},
	} {
		for _, authed := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				var c *client
				if authed {
					c = e.tcpClient(t, "mal"+string(rune('a'+i)), "")
				} else {
					c = dialTCP(t, e.s.Addrs().TCP)
				}
				c.sendRaw(tc.frame)
				f := c.expect(protocol.OpDisconnectReply)
				if !strings.Contains(string(f.Body), tc.want.Error()) {
					t.Fatalf("reason %q, want %q", f.Body, tc.want)
				}
				c.expectClosed()
			})
		}
	}
	// The same over WebSocket, plus WebSocket-level garbage.
	ws := e.wsClient(t, "w1", "")
	ws.sendRaw(hdr(16, 20))
	ws.expect(protocol.OpDisconnectReply)
	ws.expectClosed()

	ws = e.wsClient(t, "w2", "")
	if err := ws.ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_, err := ws.read(waitFor)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseUnsupportedData {
		t.Fatalf("text frame: %v", err)
	}
	ws = e.wsClient(t, "w3", "")
	two := protocol.AppendFrame(protocol.AppendFrame(nil, 1, protocol.OpHeartbeat, 1, nil), 1, protocol.OpHeartbeat, 2, nil)
	ws.sendRaw(two)
	if _, err := ws.read(waitFor); !errors.As(err, &ce) {
		t.Fatalf("two packets in one message: %v", err)
	}
	if got := counterValue(t, e.s.m.protoErrors.WithLabelValues("pack_len")); got < 6 {
		t.Fatalf("pack_len errors %v", got)
	}
	eventually(t, "readers gone", func() bool { return e.s.readers.Load() == 0 })
}

func TestWebSocketCoalescesIntoRaw(t *testing.T) {
	e := startServer(t, nil)
	c := e.wsClient(t, "w", "")
	cn := e.s.bucketFor("w").get("w")
	const n = 200
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = protocol.AppendFrame(nil, 1, protocol.OpMsgPush, int32(i), []byte("m"))
	}
	// Pretend a write is in progress so that every frame queues up, then
	// let the flusher run: it must send them all in one message.
	cn.mu.Lock()
	if !cn.startFlusherLocked() {
		t.Fatal("flusher already running")
	}
	cn.mu.Unlock()
	for _, f := range frames {
		if err := cn.enqueue(f); err != nil {
			t.Fatal(err)
		}
	}
	go cn.flushLoop()
	for i := 0; i < n; i++ {
		f := c.expect(protocol.OpMsgPush)
		if f.Seq != int32(i) {
			t.Fatalf("frame %d has seq %d", i, f.Seq)
		}
	}
	if c.raws != 1 {
		t.Fatalf("%d frames came in %d OpRaw messages, want 1", n, c.raws)
	}

	// A queued OpRaw (job's batches) is flattened, never nested.
	packed := append(protocol.AppendFrame(nil, 1, 1001, 1, []byte("a")), protocol.AppendFrame(nil, 1, 1001, 2, []byte("b"))...)
	e.push(t, "w", protocol.OpRaw, string(packed))
	if f := c.expect(1001); string(f.Body) != "a" {
		t.Fatalf("%q", f.Body)
	}
	c.expect(1001)
}

func TestTCPRawIsWrittenAsPackets(t *testing.T) {
	e := startServer(t, nil)
	c := e.tcpClient(t, "t", "")
	packed := append(protocol.AppendFrame(nil, 1, 1001, 1, []byte("a")), protocol.AppendFrame(nil, 1, 1001, 2, []byte("b"))...)
	e.push(t, "t", protocol.OpRaw, string(packed))
	if f := c.expect(1001); string(f.Body) != "a" {
		t.Fatalf("%q", f.Body)
	}
	if f := c.expect(1001); string(f.Body) != "b" {
		t.Fatalf("%q", f.Body)
	}
}

func TestKickAPI(t *testing.T) {
	e := startServer(t, nil)
	c := e.tcpClient(t, "k", "")
	r, err := e.s.API().Kick(context.Background(), &cometapi.KickReq{
		Keys: []string{"k", "gone"}, Reason: protocol.KickReason_KICK_REASON_ADMIN, Message: "bye",
	})
	if err != nil || len(r.GetMissingKeys()) != 1 || r.GetMissingKeys()[0] != "gone" {
		t.Fatalf("%v %v", r, err)
	}
	f := c.expect(protocol.OpKick)
	var k protocol.Kick
	if err := proto.Unmarshal(f.Body, &k); err != nil || k.GetReason() != protocol.KickReason_KICK_REASON_ADMIN || k.GetMessage() != "bye" {
		t.Fatalf("kick %v %v", &k, err)
	}
	c.expectClosed()
}

func TestGRPCAPI(t *testing.T) {
	e := startServer(t, nil)
	c := e.tcpClient(t, "k", "")
	cc, err := grpc.NewClient(e.s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := cometapi.NewCometClient(cc)
	r, err := api.PushMsg(context.Background(), &cometapi.PushMsgReq{Keys: []string{"k"}, ProtoOp: 5, Proto: &protocol.Proto{Op: 5, Body: []byte("g")}})
	if err != nil || len(r.GetMissingKeys()) != 0 {
		t.Fatalf("%v %v", r, err)
	}
	c.expect(5)
}

func TestShutdownDrains(t *testing.T) {
	f := &fakeLogic{onlineMul: 1}
	lc := startLogic(t, f)
	// Warm the logic client so its goroutines count in the baseline.
	_, _ = lc.Heartbeat(context.Background(), nil)
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	var drained atomic.Bool
	cfg := testConfig()
	cfg.DrainParallelism = 3 // fewer than the clients: kicks go in waves
	s, err := New(cfg, Deps{Logic: lc, Logger: testLogger(t), OnDraining: func() { drained.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{s: s, logic: f}
	var cs []*client
	for i := 0; i < 10; i++ {
		key := "d" + string(rune('a'+i))
		if i%2 == 0 {
			cs = append(cs, e.tcpClient(t, key, "room"))
		} else {
			cs = append(cs, e.wsClient(t, key, "room"))
		}
	}
	pending := dialTCP(t, s.Addrs().TCP) // never authenticates
	eventually(t, "pending connection accepted", func() bool { return s.readers.Load() == int64(len(cs)+1) })
	if s.Draining() {
		t.Fatal("draining before shutdown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d >= cfg.HandshakeTimeout {
		t.Fatalf("shutdown took %v: it waited for the unauthenticated connection's timeout", d)
	}
	if !drained.Load() || !s.Draining() {
		t.Fatal("OnDraining not called")
	}
	for _, c := range cs {
		f := c.expect(protocol.OpKick)
		var k protocol.Kick
		if err := proto.Unmarshal(f.Body, &k); err != nil || k.GetReason() != protocol.KickReason_KICK_REASON_SERVER_DRAINING {
			t.Fatalf("kick %v %v", &k, err)
		}
		c.expectClosed()
	}
	if f := pending.expect(protocol.OpDisconnectReply); string(f.Body) != ErrDraining.Error() {
		t.Fatalf("pending connection got %q", f.Body)
	}
	pending.expectClosed()
	f.mu.Lock()
	nd := len(f.disconnects)
	f.mu.Unlock()
	if nd != len(cs) {
		t.Fatalf("%d disconnects, want %d", nd, len(cs))
	}
	if _, err := dialTCPErr(s.Addrs().TCP); err == nil {
		t.Fatal("still accepting after shutdown")
	}
	eventually(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

// Shutdown's kicks are spread over DrainSpread, not sent all at once.
func TestShutdownSpreadsKicks(t *testing.T) {
	const spread = 600 * time.Millisecond
	e := startServer(t, func(c *Config) { c.DrainSpread = spread })
	const n = 6
	var cs []*client
	for i := 0; i < n; i++ {
		cs = append(cs, e.tcpClient(t, "s"+string(rune('a'+i)), ""))
	}
	kicked := make(chan time.Duration, n)
	start := time.Now()
	for _, c := range cs {
		go func() {
			for {
				f, err := c.read(waitFor)
				if err != nil {
					return
				}
				if f.Op == protocol.OpKick {
					kicked <- time.Since(start)
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := e.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var first, last time.Duration
	for i := 0; i < n; i++ {
		select {
		case d := <-kicked:
			if i == 0 || d < first {
				first = d
			}
			last = max(last, d)
		case <-time.After(waitFor):
			t.Fatalf("only %d of %d clients kicked", i, n)
		}
	}
	// Kick i is due at spread*i/n: the last one at 5/6 of the spread.
	if want := spread * (n - 1) / n * 8 / 10; last-first < want {
		t.Fatalf("kicks spread over %v, want at least %v", last-first, want)
	}
}

func TestShutdownDeadlineForcesClose(t *testing.T) {
	e := startServer(t, func(c *Config) { c.KickWriteTimeout = time.Hour; c.WriteTimeout = time.Hour })
	c := e.tcpClient(t, "k", "")
	_ = c
	// A client that does not read cannot block Shutdown past its deadline.
	cn := e.s.bucketFor("k").get("k")
	big := make([]byte, 8<<10)
	frame := protocol.AppendFrame(nil, 1, protocol.OpMsgPush, 0, big)
	for i := 0; i < 2000 && cn.enqueue(frame) == nil; i++ {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) && err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

// A connection whose reader has finished (the client half-closed) while
// its flusher is still blocked writing to a client that does not read is
// closed by a forced shutdown too: its heartbeat timer is gone, so the
// expiry of every timer did not reach it, and Shutdown waited for the
// flusher for good (seen once in CI as a 15-minute hang of
// TestShutdownDeadlineForcesClose).
func TestShutdownDeadlineClosesFinishedReader(t *testing.T) {
	e := startServer(t, func(c *Config) {
		c.KickWriteTimeout, c.WriteTimeout, c.MaxQueueBytes = time.Hour, time.Hour, 64<<20
	})
	c := e.tcpClient(t, "k", "")
	cn := e.s.bucketFor("k").get("k")
	big := make([]byte, 8<<10)
	frame := protocol.AppendFrame(nil, 1, protocol.OpMsgPush, 0, big)
	// More than the socket buffers hold (loopback autotuning reaches a few
	// MB), under the slow-consumer bound: the flusher blocks in a write.
	for range 2000 {
		if err := cn.enqueue(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nc.(*net.TCPConn).CloseWrite(); err != nil { // the reader sees EOF and finishes
		t.Fatal(err)
	}
	eventually(t, "the reader to finish", func() bool { return e.s.bucketFor("k").get("k") == nil })
	cn.mu.Lock()
	blocked := cn.flushing
	cn.mu.Unlock()
	if !blocked {
		t.Fatal("the flusher finished: the socket buffers held 16 MB; the test needs more")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.s.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) && err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still waits for a flusher blocked on a client that does not read")
	}
}

func TestTCPCoalescesIntoOneWrite(t *testing.T) {
	e := startServer(t, nil)
	c := e.tcpClient(t, "t", "")
	cn := e.s.bucketFor("t").get("t")
	eventually(t, "auth reply written", func() bool { return counterValue(t, e.s.m.writes) == 1 })
	cn.mu.Lock()
	if !cn.startFlusherLocked() {
		t.Fatal("flusher already running")
	}
	cn.mu.Unlock()
	const n = 100
	for i := 0; i < n; i++ {
		if err := cn.enqueue(protocol.AppendFrame(nil, 1, protocol.OpMsgPush, int32(i), []byte("m"))); err != nil {
			t.Fatal(err)
		}
	}
	go cn.flushLoop()
	for i := 0; i < n; i++ {
		if f := c.expect(protocol.OpMsgPush); f.Seq != int32(i) {
			t.Fatalf("frame %d has seq %d", i, f.Seq)
		}
	}
	eventually(t, "write counted", func() bool { return counterValue(t, e.s.m.writes) >= 2 })
	if w := counterValue(t, e.s.m.writes); w != 2 {
		t.Fatalf("%v writes, want 2 (auth reply + one coalesced write)", w)
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "comet.yaml")
	yaml := "id: c1\nbuckets: 16\nheartbeat_interval: 10s\nwss_addr: \"\"\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	// File values, DefaultConfig's ports, and New's defaults.
	if cfg.ID != "c1" || cfg.Buckets != 16 || cfg.HeartbeatInterval != 10*time.Second ||
		cfg.TCPAddr != ":3101" || cfg.MaxQueueBytes != DefaultMaxQueueBytes {
		t.Fatalf("%+v", cfg)
	}
	t.Setenv("HUBUIM_COMET_TCP_ADDR", "")
	t.Setenv("HUBUIM_COMET_BUCKETS", "64")
	if cfg, err = LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	if cfg.TCPAddr != "" || cfg.Buckets != 64 {
		t.Fatalf("env overrides not applied: %+v", cfg)
	}
	if err := os.WriteFile(path, []byte("nope: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestWebSocketShallowWait(t *testing.T) {
	if gorillaBROffset == 0 {
		t.Fatal("gorilla/websocket layout changed: the shallow WebSocket wait is off (idle WebSocket connections cost 2 KB more)")
	}
	e := startServer(t, nil)
	c := e.wsClient(t, "w", "")
	// Two WebSocket messages in one TCP write: the second sits in gorilla's
	// read buffer when the first is handled, and must not wait for the
	// socket to become readable again.
	var raw []byte
	for seq := int32(1); seq <= 2; seq++ {
		pkt := protocol.AppendFrame(nil, protocol.Version, protocol.OpHeartbeat, seq, nil)
		raw = append(raw, 0x82, 0x80|byte(len(pkt)), 0, 0, 0, 0) // binary, masked with a zero key
		raw = append(raw, pkt...)
	}
	if _, err := c.nc.Write(raw); err != nil {
		t.Fatal(err)
	}
	for seq := int32(1); seq <= 2; seq++ {
		if f := c.expect(protocol.OpHeartbeatReply); f.Seq != seq {
			t.Fatalf("reply seq %d, want %d", f.Seq, seq)
		}
	}
}
