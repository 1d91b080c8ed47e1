package comet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

const waitFor = 5 * time.Second

// authBody is the Auth (op 7) body of PROTOCOL.md.
type authBody struct {
	Mid     int64   `json:"mid"`
	Key     string  `json:"key"`
	RoomID  string  `json:"room_id"`
	Accepts []int32 `json:"accepts"`
	Token   string  `json:"token"`
}

// fakeLogic is a logic.LogicServer recording what comets tell it.
type fakeLogic struct {
	logic.UnimplementedLogicServer
	heartbeatMS int64

	mu          sync.Mutex
	connects    []*logic.ConnectReq
	disconnects []*logic.DisconnectReq
	heartbeats  int
	online      []*logic.OnlineReq
	onlineMul   int32 // RenewOnline answers local counts × onlineMul
}

func (f *fakeLogic) Connect(_ context.Context, req *logic.ConnectReq) (*logic.ConnectReply, error) {
	var a authBody
	if err := json.Unmarshal(req.GetToken(), &a); err != nil {
		return nil, status.Error(codes.InvalidArgument, "bad auth body")
	}
	if a.Token == "bad" {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	f.mu.Lock()
	f.connects = append(f.connects, req)
	hb := f.heartbeatMS
	f.mu.Unlock()
	return &logic.ConnectReply{Mid: a.Mid, Key: a.Key, RoomId: a.RoomID, Accepts: a.Accepts, HeartbeatMs: hb, Platform: "test"}, nil
}

func (f *fakeLogic) Disconnect(_ context.Context, req *logic.DisconnectReq) (*logic.DisconnectReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disconnects = append(f.disconnects, req)
	return &logic.DisconnectReply{Removed: true}, nil
}

func (f *fakeLogic) Heartbeat(context.Context, *logic.HeartbeatReq) (*logic.HeartbeatReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	return &logic.HeartbeatReply{}, nil
}

func (f *fakeLogic) RenewOnline(_ context.Context, req *logic.OnlineReq) (*logic.OnlineReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.online = append(f.online, req)
	all := make(map[string]int32)
	for k, v := range req.GetRoomCount() {
		all[k] = v * f.onlineMul
	}
	return &logic.OnlineReply{AllRoomCount: all}, nil
}

func (f *fakeLogic) Receive(_ context.Context, req *logic.ReceiveReq) (*logic.ReceiveReply, error) {
	p := req.GetProto()
	if p.GetOp() == protocol.OpSendMsg {
		return &logic.ReceiveReply{Proto: &protocol.Proto{Op: protocol.OpSendMsgReply, Seq: 9999, Body: append([]byte("echo:"), p.GetBody()...)}}, nil
	}
	return &logic.ReceiveReply{}, nil
}

func (f *fakeLogic) disconnectsFor(connID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range f.disconnects {
		if d.GetConnId() == connID {
			n++
		}
	}
	return n
}

func (f *fakeLogic) connIDOf(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := ""
	for _, c := range f.connects {
		var a authBody
		_ = json.Unmarshal(c.GetToken(), &a)
		if a.Key == key {
			id = c.GetConnId() // the latest
		}
	}
	return id
}

// startLogic serves f on 127.0.0.1:0 and returns a client for it.
func startLogic(tb testing.TB, f logic.LogicServer, opts ...grpc.ServerOption) logic.LogicClient {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := newGRPCServer(opts...)
	logic.RegisterLogicServer(gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	tb.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return dialLogic(tb, l.Addr().String())
}

func newGRPCServer(opts ...grpc.ServerOption) *grpc.Server { return grpc.NewServer(opts...) }

func dialLogic(tb testing.TB, addr string) logic.LogicClient {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return logic.NewLogicClient(cc)
}

func testConfig() Config {
	return Config{
		ID:               "comet-test",
		TCPAddr:          "127.0.0.1:0",
		WSAddr:           "127.0.0.1:0",
		GRPCAddr:         "127.0.0.1:0",
		Buckets:          4,
		TimerWheels:      2,
		TimerTick:        10 * time.Millisecond,
		HandshakeTimeout: 2 * time.Second,
		OnlineInterval:   time.Hour, // tests call renewOnline directly
		DrainTimeout:     5 * time.Second,
		DrainSpread:      -1, // TestShutdownSpreadsKicks sets one
	}
}

type env struct {
	s     *Server
	logic *fakeLogic
}

// startServer starts a comet against a fake logic; mod adjusts the config.
func startServer(tb testing.TB, mod func(*Config)) *env {
	tb.Helper()
	return startServerWith(tb, nil, mod)
}

// startServerWith is startServer with logic served by wrap(the fake), for
// a test that changes some of its answers (nil: the fake itself).
func startServerWith(tb testing.TB, wrap func(*fakeLogic) logic.LogicServer, mod func(*Config)) *env {
	tb.Helper()
	f := &fakeLogic{onlineMul: 1}
	var served logic.LogicServer = f
	if wrap != nil {
		served = wrap(f)
	}
	lc := startLogic(tb, served)
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, Deps{Logic: lc, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
	})
	return &env{s: s, logic: f}
}

// client is a test client over TCP or WebSocket.
type client struct {
	tb  testing.TB
	nc  net.Conn
	ws  *websocket.Conn
	hdr [protocol.HeaderLen]byte
	// pending holds frames unpacked from a WebSocket OpRaw message.
	pending []protocol.Frame
	raws    int // OpRaw messages received (WebSocket)
	br      *bufio.Reader
}

func dialTCP(tb testing.TB, addr string) *client {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	return &client{tb: tb, nc: nc}
}

func dialWS(tb testing.TB, addr string) *client {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/sub", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ws.Close() })
	return &client{tb: tb, ws: ws, nc: ws.UnderlyingConn()}
}

func (c *client) sendRaw(b []byte) {
	c.tb.Helper()
	var err error
	if c.ws != nil {
		err = c.ws.WriteMessage(websocket.BinaryMessage, b)
	} else {
		_, err = c.nc.Write(b)
	}
	if err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

func (c *client) send(op, seq int32, body []byte) {
	c.tb.Helper()
	c.sendRaw(protocol.AppendFrame(nil, protocol.Version, op, seq, body))
}

// read returns the next frame or the read error.
func (c *client) read(timeout time.Duration) (protocol.Frame, error) {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f, nil
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	if c.ws != nil {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return protocol.Frame{}, err
		}
		f, rest, err := protocol.Unpack(msg, 1<<20)
		if err != nil {
			return protocol.Frame{}, err
		}
		if len(rest) != 0 {
			return protocol.Frame{}, errors.New("trailing bytes in websocket message")
		}
		if f.Op != protocol.OpRaw {
			return f, nil
		}
		c.raws++
		if err := protocol.SplitRaw(f.Body, 1<<20, func(in protocol.Frame) error {
			c.pending = append(c.pending, in)
			return nil
		}); err != nil {
			return protocol.Frame{}, err
		}
		return c.read(timeout)
	}
	if c.br == nil {
		c.br = bufio.NewReader(c.nc)
	}
	return protocol.ReadFrame(c.br, &c.hdr, 1<<20, nil)
}

// expect reads the next frame and checks its op.
func (c *client) expect(op int32) protocol.Frame {
	c.tb.Helper()
	f, err := c.read(waitFor)
	if err != nil {
		c.tb.Fatalf("waiting for op %d: %v", op, err)
	}
	if f.Op != op {
		c.tb.Fatalf("got op %d (body %q), want op %d", f.Op, f.Body, op)
	}
	return f
}

// expectClosed reads until the server closes the connection.
func (c *client) expectClosed() {
	c.tb.Helper()
	for {
		f, err := c.read(waitFor)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.tb.Fatalf("connection not closed (last frame op %d)", f.Op)
		}
		return
	}
}

// push sends body with op to key through the Comet API (in-process).
func (e *env) push(tb testing.TB, key string, op int32, body string) []string {
	tb.Helper()
	r, err := e.s.API().PushMsg(context.Background(), &cometapi.PushMsgReq{
		Keys: []string{key}, ProtoOp: op, Proto: &protocol.Proto{Op: op, Body: []byte(body)},
	})
	if err != nil {
		tb.Fatalf("push: %v", err)
	}
	return r.GetMissingKeys()
}

// marker pushes an always-accepted marker to key and expects it as the
// next frame: nothing else was queued before it.
func (e *env) marker(tb testing.TB, c *client, key string) {
	tb.Helper()
	e.push(tb, key, markerOp, "marker")
	f := c.expect(markerOp)
	if string(f.Body) != "marker" {
		tb.Fatalf("marker body %q", f.Body)
	}
}

const markerOp = protocol.OpMsgNotify

func (e *env) auth(tb testing.TB, c *client, a authBody) authReply {
	tb.Helper()
	body, _ := json.Marshal(a)
	c.send(protocol.OpAuth, 1, body)
	f := c.expect(protocol.OpAuthReply)
	var r authReply
	if err := json.Unmarshal(f.Body, &r); err != nil {
		tb.Fatalf("auth reply %q: %v", f.Body, err)
	}
	return r
}

func (e *env) tcpClient(tb testing.TB, key, room string, accepts ...int32) *client {
	tb.Helper()
	c := dialTCP(tb, e.s.Addrs().TCP)
	e.auth(tb, c, authBody{Mid: 1, Key: key, RoomID: room, Accepts: accepts})
	return c
}

func (e *env) wsClient(tb testing.TB, key, room string, accepts ...int32) *client {
	tb.Helper()
	c := dialWS(tb, e.s.Addrs().WS)
	e.auth(tb, c, authBody{Mid: 1, Key: key, RoomID: room, Accepts: accepts})
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, waitFor, what, cond)
}

type transportCase struct {
	name string
	addr string
	dial func(testing.TB, string) *client
}

func (e *env) transports() []transportCase {
	return []transportCase{
		{"tcp", e.s.Addrs().TCP, dialTCP},
		{"ws", e.s.Addrs().WS, dialWS},
	}
}

func dialTCPErr(addr string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = nc.Close()
	}
	return nc, err
}

func counterValue(tb testing.TB, c prometheus.Collector) float64 {
	tb.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// debugTail is how many Debug lines testLogger keeps for a failure.
const debugTail = 200

// testLogger logs Info and above through tb (shown only for failing
// tests). Debug lines (a connection's write error, for one) are too many
// to log per connection in the benchmarks: the last debugTail of them are
// kept and logged only if tb failed.
func testLogger(tb testing.TB) *slog.Logger {
	tail := &debugRing{}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("last %d debug lines:", tail.len())
			tail.flush(tb.Log)
		}
	})
	return slog.New(levelSplit{
		info:  slog.NewTextHandler(tbWriter{tb}, nil),
		debug: slog.NewTextHandler(tail, &slog.HandlerOptions{Level: slog.LevelDebug}),
	})
}

// levelSplit sends Debug records to debug and the others to info.
type levelSplit struct{ info, debug slog.Handler }

func (h levelSplit) Enabled(context.Context, slog.Level) bool { return true }

func (h levelSplit) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.debug.Handle(ctx, r)
	}
	return h.info.Handle(ctx, r)
}

func (h levelSplit) WithAttrs(as []slog.Attr) slog.Handler {
	return levelSplit{h.info.WithAttrs(as), h.debug.WithAttrs(as)}
}

func (h levelSplit) WithGroup(name string) slog.Handler {
	return levelSplit{h.info.WithGroup(name), h.debug.WithGroup(name)}
}

// debugRing keeps the last debugTail lines written to it.
type debugRing struct {
	mu    sync.Mutex
	lines []string
	next  int
}

func (r *debugRing) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < debugTail {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.next] = line
		r.next = (r.next + 1) % debugTail
	}
	return len(p), nil
}

func (r *debugRing) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

// flush hands the kept lines to log, oldest first.
func (r *debugRing) flush(log func(...any)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.lines {
		log(r.lines[(r.next+i)%len(r.lines)])
	}
}

// The debug tail keeps the last debugTail lines, oldest first.
func TestDebugRingKeepsTheTail(t *testing.T) {
	var r debugRing
	for i := range debugTail + 50 {
		fmt.Fprintf(&r, "line %d\n", i)
	}
	var got []string
	r.flush(func(a ...any) { got = append(got, fmt.Sprint(a...)) })
	if len(got) != debugTail || got[0] != "line 50" || got[debugTail-1] != fmt.Sprintf("line %d", debugTail+49) {
		t.Fatalf("kept %d lines, first %q, last %q", len(got), got[0], got[len(got)-1])
	}
}
