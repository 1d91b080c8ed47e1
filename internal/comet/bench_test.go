package comet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
)

// memConn is a net.Conn that reads from a buffer and discards writes.
type memConn struct {
	r *bytes.Reader
}

func (m *memConn) Read(p []byte) (int, error) {
	if m.r == nil {
		return 0, net.ErrClosed
	}
	return m.r.Read(p)
}
func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// newBenchServer returns a server that is not started (no listeners); its
// connections are memConns registered directly in the buckets.
func newBenchServer(tb testing.TB, mod func(*Config)) *Server {
	tb.Helper()
	cfg := Config{ID: "bench"}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, Deps{Logic: logic.NewLogicClient(nil), Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *Server) addMemConn(tb testing.TB, key, room string, accepts ...int32) *conn {
	tb.Helper()
	c := s.newConn(&memConn{})
	c.key = key
	c.bucket = s.bucketFor(key)
	c.setAccepts(accepts)
	if _, err := c.bucket.put(c, room, nil); err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitIdle waits until no flusher runs on the server's connections.
func waitIdle(s *Server, cs []*conn) {
	for _, c := range cs {
		for {
			c.mu.Lock()
			busy := c.flushing
			c.mu.Unlock()
			if !busy {
				break
			}
			runtime.Gosched()
		}
	}
}

// BenchmarkEnqueue is the per-push path to one idle connection: queue the
// frame, start a flusher, write, let the flusher exit.
func BenchmarkEnqueue(b *testing.B) {
	s := newBenchServer(b, nil)
	c := s.addMemConn(b, "k", "")
	frame := protocol.AppendFrame(nil, 1, 1001, 0, make([]byte, 128))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.enqueue(frame); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			waitIdle(s, []*conn{c})
		}
	}
	b.StopTimer()
	waitIdle(s, []*conn{c})
}

// BenchmarkPushMsg is the gRPC handler body: encode once, look up the key,
// check accepts, enqueue.
func BenchmarkPushMsg(b *testing.B) {
	s := newBenchServer(b, nil)
	c := s.addMemConn(b, "k", "", 1001)
	req := &cometapi.PushMsgReq{Keys: []string{"k"}, ProtoOp: 1001, Proto: &protocol.Proto{Op: 1001, Body: make([]byte, 128)}}
	a := s.API()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.PushMsg(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			waitIdle(s, []*conn{c})
		}
	}
	b.StopTimer()
	waitIdle(s, []*conn{c})
}

// BenchmarkRoomBroadcast delivers one pre-encoded frame to a 1,000-member
// room (one op = one message to every member).
func BenchmarkRoomBroadcast(b *testing.B) {
	const members = 1000
	s := newBenchServer(b, nil)
	cs := make([]*conn, members)
	for i := range cs {
		cs[i] = s.addMemConn(b, "m"+strconv.Itoa(i), "room")
	}
	frame := protocol.AppendFrame(nil, 1, 1001, 0, make([]byte, 128))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		for _, bk := range s.buckets {
			n += bk.deliverRoom("room", frame)
		}
		if n != members {
			b.Fatalf("delivered to %d", n)
		}
		if i%16 == 15 {
			waitIdle(s, cs)
		}
	}
	waitIdle(s, cs)
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/member")
}

// FuzzReadFrame feeds arbitrary bytes to the connection's frame reader: it
// must return frames within MaxBody or an error, never panic.
func FuzzReadFrame(f *testing.F) {
	f.Add(protocol.AppendFrame(nil, 1, protocol.OpAuth, 1, []byte(`{"mid":1}`)))
	f.Add(protocol.AppendFrame(protocol.AppendFrame(nil, 1, 2, 1, nil), 1, 2, 2, nil))
	f.Add([]byte{0, 0, 0, 16, 0, 20, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1})
	s := newBenchServer(f, func(c *Config) { c.MaxBody = 1024 })
	f.Fuzz(func(t *testing.T, data []byte) {
		c := s.newConn(&memConn{r: bytes.NewReader(data)})
		for i := 0; i < len(data)/protocol.HeaderLen+1; i++ {
			fr, bp, err := c.readFrame()
			if err != nil {
				return
			}
			if len(fr.Body) > 1024 {
				t.Fatalf("body %d > max", len(fr.Body))
			}
			c.putBody(bp)
		}
	})
}

// recConn records the first byte's address of every write.
type recConn struct {
	memConn
	mu     sync.Mutex
	writes []*byte
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, &p[0])
	r.mu.Unlock()
	return len(p), nil
}

func TestRoomBroadcastEncodedOnce(t *testing.T) {
	s := newBenchServer(t, func(c *Config) { c.Buckets = 4 })
	var recs []*recConn
	var conns []*conn
	for i := 0; i < 40; i++ {
		rc := &recConn{}
		c := s.newConn(rc)
		c.key = "m" + strconv.Itoa(i)
		c.bucket = s.bucketFor(c.key)
		if _, err := c.bucket.put(c, "room", nil); err != nil {
			t.Fatal(err)
		}
		recs, conns = append(recs, rc), append(conns, c)
	}
	if _, err := s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{
		RoomId: "room", Proto: &protocol.Proto{Op: 1001, Body: []byte("once")},
	}); err != nil {
		t.Fatal(err)
	}
	// The server is not started: run each bucket's queued job here.
	for _, b := range s.buckets {
		for _, q := range b.queues {
			select {
			case j := <-q:
				b.deliverRoom(j.room, j.frame)
			default:
			}
		}
	}
	waitIdle(s, conns)
	var first *byte
	for i, rc := range recs {
		rc.mu.Lock()
		if len(rc.writes) != 1 {
			t.Fatalf("member %d: %d writes", i, len(rc.writes))
		}
		if first == nil {
			first = rc.writes[0]
		} else if rc.writes[0] != first {
			t.Fatalf("member %d was written a different copy of the frame", i)
		}
		rc.mu.Unlock()
	}
}

func TestRoomQueueFullIsAnError(t *testing.T) {
	// Not started: the room workers do not run, so the queue fills.
	s := newBenchServer(t, func(c *Config) { c.Buckets = 1; c.RoomWorkers = 1; c.RoomQueue = 1 })
	s.addMemConn(t, "k", "room")
	req := &cometapi.BroadcastRoomReq{RoomId: "room", Proto: &protocol.Proto{Op: 1001}}
	if _, err := s.API().BroadcastRoom(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	_, err := s.API().BroadcastRoom(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("full queue: %v", err)
	}
	if got := counterValue(t, s.m.roomQueueFull); got != 1 {
		t.Fatalf("room_queue_full metric %v", got)
	}
	// A room whose members are in several buckets, one of them full: the
	// others queue it and the call succeeds (a retry would duplicate it
	// for them; found by review), the full one is counted.
	s2 := newBenchServer(t, func(c *Config) { c.Buckets = 2; c.RoomWorkers = 1; c.RoomQueue = 1 })
	var in0, in1 []string // keys of bucket 0 and 1
	for i := 0; len(in0) < 2 || len(in1) < 1; i++ {
		k := fmt.Sprint("k", i)
		if s2.bucketFor(k) == s2.buckets[0] {
			in0 = append(in0, k)
		} else {
			in1 = append(in1, k)
		}
	}
	s2.addMemConn(t, in0[0], "room")
	s2.addMemConn(t, in1[0], "room")
	s2.addMemConn(t, in0[1], "room0") // fills bucket 0's queue below
	fill := &cometapi.BroadcastRoomReq{RoomId: "room0", Proto: &protocol.Proto{Op: 1001}}
	if _, err := s2.API().BroadcastRoom(context.Background(), fill); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.API().BroadcastRoom(context.Background(), req); err != nil {
		t.Fatalf("partial broadcast: %v, want success", err)
	}
	if got := counterValue(t, s2.m.roomQueueFull); got != 1 {
		t.Fatalf("room_queue_full after a partial broadcast %v, want 1", got)
	}
	if _, err := s2.API().BroadcastRoom(context.Background(), req); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("every bucket full: %v, want ResourceExhausted", err)
	}
	// A room with no member here is not queued at all.
	if _, err := s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{RoomId: "empty", Proto: &protocol.Proto{Op: 1001}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.API().BroadcastRoom(context.Background(), &cometapi.BroadcastRoomReq{Proto: &protocol.Proto{}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no room id: %v", err)
	}
}

// BenchmarkTCPRoundTrip is the client → comet read path over a real TCP
// socket: heartbeats answered by the comet (no logic call), per frame.
// pingpong waits for each reply, so that with the poller the connection
// parks and wakes for every frame (its worst case); burst sends 16 frames
// in one write. poller=off is the goroutine-per-connection reader.
func BenchmarkTCPRoundTrip(b *testing.B) {
	const burst = 16
	const replyLen = protocol.HeaderLen + countBodyLen
	for _, poll := range []bool{true, false} {
		for _, n := range []int{1, burst} {
			name := "pingpong"
			if n > 1 {
				name = "burst"
			}
			b.Run(name+"/poller="+map[bool]string{true: "on", false: "off"}[poll], func(b *testing.B) {
				e := startServer(b, func(c *Config) {
					c.DisableTCPPoller = !poll
					c.LogicHeartbeat = time.Hour
				})
				c := e.tcpClient(b, "k", "")
				var req []byte
				for range n {
					req = protocol.AppendFrame(req, protocol.Version, protocol.OpHeartbeat, 1, nil)
				}
				resp := make([]byte, n*replyLen)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += n {
					if _, err := c.nc.Write(req); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c.nc, resp); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
