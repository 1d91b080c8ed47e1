package comet

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
)

// Environment of the measurement benchmarks. They need a second process for
// the clients (the per-process fd limit is 20,000), so the test binary
// re-executes itself as the client (TestBenchClient).
const (
	envBenchConns  = "HUBUIM_BENCH_CONNS"  // connections; the benchmarks skip when unset
	envBenchClient = "HUBUIM_BENCH_CLIENT" // set in the client process: JSON benchClientSpec
	benchRoom      = "bench://fanout"
	benchClientDop = 16 // concurrent dials in the client process
)

type benchClientSpec struct {
	Addr      string `json:"addr"`
	Transport string `json:"transport"` // "tcp" or "ws"
	Conns     int    `json:"conns"`
	Read      bool   `json:"read"` // read and time fan-out messages
	Expect    int    `json:"expect"`
}

// leanLogic accepts every Connect without recording anything, so that the
// measured process holds only the comet's per-connection state.
type leanLogic struct {
	logic.UnimplementedLogicServer
	n atomic.Int64
}

func (l *leanLogic) Connect(context.Context, *logic.ConnectReq) (*logic.ConnectReply, error) {
	n := l.n.Add(1)
	return &logic.ConnectReply{Mid: n, Key: "k" + strconv.FormatInt(n, 10), RoomId: benchRoom, HeartbeatMs: int64(time.Hour / time.Millisecond)}, nil
}

func (l *leanLogic) Heartbeat(context.Context, *logic.HeartbeatReq) (*logic.HeartbeatReply, error) {
	return &logic.HeartbeatReply{}, nil
}

func (l *leanLogic) Disconnect(context.Context, *logic.DisconnectReq) (*logic.DisconnectReply, error) {
	return &logic.DisconnectReply{}, nil
}

func rssBytes(tb testing.TB) int64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("VmRSS not found")
	return 0
}

func settle(tb testing.TB) (rss int64, ms runtime.MemStats) {
	for i := 0; i < 3; i++ {
		runtime.GC()
		debug.FreeOSMemory()
	}
	runtime.ReadMemStats(&ms)
	return rssBytes(tb), ms
}

type benchClient struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	out       *bufio.Scanner
	logicAddr string
}

// startBenchClient runs the client process, which also serves the lean
// logic (so that the measured comet process holds no logic state or
// garbage), and returns once logic listens.
func startBenchClient(tb testing.TB, spec benchClientSpec) *benchClient {
	tb.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchClient$", "-test.v")
	cmd.Env = append(os.Environ(), envBenchClient+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &benchClient{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	tb.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	c.logicAddr = strings.TrimPrefix(c.waitLine(tb, "LOGIC "), "LOGIC ")
	return c
}

// dial makes the client process open n connections to addr and
// authenticate them.
func (c *benchClient) dial(tb testing.TB, addr string, n int) {
	tb.Helper()
	if _, err := fmt.Fprintf(c.stdin, "DIAL %s %d\n", addr, n); err != nil {
		tb.Fatal(err)
	}
	c.waitLine(tb, "READY")
}

// closeAll makes the client process close its connections.
func (c *benchClient) closeAll(tb testing.TB) {
	tb.Helper()
	if _, err := fmt.Fprintln(c.stdin, "CLOSE"); err != nil {
		tb.Fatal(err)
	}
	c.waitLine(tb, "CLOSED")
}

func (c *benchClient) waitLine(tb testing.TB, prefix string) string {
	tb.Helper()
	for c.out.Scan() {
		if line := c.out.Text(); strings.HasPrefix(line, prefix) {
			return line
		}
	}
	tb.Fatalf("client exited before %s: %v", prefix, c.out.Err())
	return ""
}

func benchConns(b *testing.B) int {
	n, _ := strconv.Atoi(os.Getenv(envBenchConns))
	if n <= 0 {
		b.Skip("set " + envBenchConns + " (e.g. 15000) to run")
	}
	return n
}

// startLeanServer starts a comet (TCP and WS only) against the lean logic
// at logicAddr.
func startLeanServer(tb testing.TB, logicAddr string, wsInline bool, mod func(*Config)) *Server {
	tb.Helper()
	lc := dialLogic(tb, logicAddr)
	// LogicHeartbeat 1ns: the clients' one heartbeat makes every reader
	// call logic once, as a real idle connection does every minute.
	cfg := Config{ID: "bench", TCPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", HandshakeTimeout: time.Minute,
		DrainTimeout: time.Minute, OnlineInterval: time.Hour, LogicHeartbeat: time.Nanosecond}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, Deps{Logic: lc, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	s.wsInline = wsInline
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

func benchIdleMemory(b *testing.B, transport string, wsInline bool, mod func(*Config)) {
	n := benchConns(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c := startBenchClient(b, benchClientSpec{Transport: transport})
		s := startLeanServer(b, c.logicAddr, wsInline, mod)
		addr := s.Addrs().TCP
		if transport == "ws" {
			addr = s.Addrs().WS
		}
		// Warm the paths (gRPC to logic, pools) so the baseline holds them.
		c.dial(b, addr, 50)
		c.closeAll(b)
		for s.Conns() != 0 {
			time.Sleep(10 * time.Millisecond)
		}
		rss0, ms0 := settle(b)
		g0 := runtime.NumGoroutine()
		c.dial(b, addr, n)
		if got := s.Conns(); got != int64(n) {
			b.Fatalf("%d conns, want %d", got, n)
		}
		time.Sleep(time.Second) // let flushers exit
		rss1, ms1 := settle(b)
		g1 := runtime.NumGoroutine()
		if path := os.Getenv("HUBUIM_BENCH_HEAPPROFILE"); path != "" {
			if f, err := os.Create(path + "." + transport); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				_ = f.Close()
			}
		}
		b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/conn")
		b.ReportMetric(float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse))/float64(n), "heap+stack-B/conn")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/conn")
		b.Logf("%s: %d conns: RSS %d -> %d MB; heap %d -> %d KB; stack %d -> %d KB; goroutines %d -> %d",
			transport, n, rss0>>20, rss1>>20, ms0.HeapInuse>>10, ms1.HeapInuse>>10, ms0.StackInuse>>10, ms1.StackInuse>>10, g0, g1)
		b.Logf("per conn: sys-released %d, gc %d, other %d, mspan %d, heap-alloc %d, heap-inuse %d, stack %d",
			perConn(ms1.Sys-ms1.HeapReleased, ms0.Sys-ms0.HeapReleased, n), perConn(ms1.GCSys, ms0.GCSys, n),
			perConn(ms1.OtherSys, ms0.OtherSys, n), perConn(ms1.MSpanInuse, ms0.MSpanInuse, n),
			perConn(ms1.HeapAlloc, ms0.HeapAlloc, n), perConn(ms1.HeapInuse, ms0.HeapInuse, n), perConn(ms1.StackInuse, ms0.StackInuse, n))
		_ = c.stdin.Close()
		_ = c.cmd.Wait()
	}
}

func perConn(after, before uint64, n int) int64 { return (int64(after) - int64(before)) / int64(n) }

// BenchmarkIdleMemoryTCP reports process memory per idle authenticated TCP
// connection: HUBUIM_BENCH_CONNS=15000 go test -run x -bench IdleMemory -benchtime 1x
func BenchmarkIdleMemoryTCP(b *testing.B) { benchIdleMemory(b, "tcp", false, nil) }

// BenchmarkIdleMemoryTCPNoPoller is BenchmarkIdleMemoryTCP with a reader
// goroutine per connection (Config.DisableTCPPoller; other platforms).
func BenchmarkIdleMemoryTCPNoPoller(b *testing.B) {
	benchIdleMemory(b, "tcp", false, func(c *Config) { c.DisableTCPPoller = true })
}

// BenchmarkIdleMemoryWS is the same over WebSocket.
func BenchmarkIdleMemoryWS(b *testing.B) { benchIdleMemory(b, "ws", false, nil) }

// BenchmarkIdleMemoryWSInline keeps each WebSocket connection on net/http's
// handler goroutine, for comparison with BenchmarkIdleMemoryWS.
func BenchmarkIdleMemoryWSInline(b *testing.B) { benchIdleMemory(b, "ws", true, nil) }

// TestBenchClient is the client process of the measurement benchmarks; it
// does nothing unless started by one of them. It serves the lean logic,
// then follows commands on stdin: "DIAL addr n" (answers "READY n"),
// "CLOSE" (answers "CLOSED"); EOF ends it. In read mode, after READY it
// reads fan-out messages and prints "DONE ...".
func TestBenchClient(t *testing.T) {
	js := os.Getenv(envBenchClient)
	if js == "" {
		t.Skip("client process of the measurement benchmarks")
	}
	var spec benchClientSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := newGRPCServer()
	logic.RegisterLogicServer(gs, &leanLogic{})
	go func() { _ = gs.Serve(l) }()
	defer gs.Stop()
	fmt.Println("LOGIC", l.Addr().String())

	var conns []*client
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 3 && f[0] == "DIAL":
			n, _ := strconv.Atoi(f[2])
			spec.Addr, spec.Conns = f[1], n
			conns = benchDialAll(t, spec)
			fmt.Println("READY", len(conns))
			if spec.Read {
				benchRead(conns, spec.Expect)
			}
		case len(f) == 1 && f[0] == "CLOSE":
			for _, c := range conns {
				_ = c.nc.Close()
			}
			conns = nil
			fmt.Println("CLOSED")
		}
	}
	for _, c := range conns {
		_ = c.nc.Close()
	}
}

func benchDialAll(t *testing.T, spec benchClientSpec) []*client {
	conns := make([]*client, spec.Conns)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchClientDop)
	for w := 0; w < benchClientDop; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= spec.Conns {
					return
				}
				c, err := benchDial(spec)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return conns
}

func benchDial(spec benchClientSpec) (*client, error) {
	var c *client
	if spec.Transport == "ws" {
		d := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
		ws, _, err := d.Dial("ws://"+spec.Addr+"/sub", nil)
		if err != nil {
			return nil, err
		}
		c = &client{ws: ws, nc: ws.UnderlyingConn()}
	} else {
		nc, err := net.Dial("tcp", spec.Addr)
		if err != nil {
			return nil, err
		}
		c = &client{nc: nc}
	}
	frame := protocol.AppendFrame(nil, protocol.Version, protocol.OpAuth, 1, []byte(`{"token":"bench"}`))
	var err error
	if c.ws != nil {
		err = c.ws.WriteMessage(websocket.BinaryMessage, frame)
	} else {
		_, err = c.nc.Write(frame)
	}
	if err != nil {
		return nil, err
	}
	f, err := c.read(30 * time.Second)
	if err != nil {
		return nil, err
	}
	if f.Op != protocol.OpAuthReply {
		return nil, fmt.Errorf("auth: op %d %q", f.Op, f.Body)
	}
	hb := protocol.AppendFrame(nil, protocol.Version, protocol.OpHeartbeat, 2, nil)
	if c.ws != nil {
		err = c.ws.WriteMessage(websocket.BinaryMessage, hb)
	} else {
		_, err = c.nc.Write(hb)
	}
	if err != nil {
		return nil, err
	}
	if f, err = c.read(30 * time.Second); err != nil {
		return nil, err
	}
	if f.Op != protocol.OpHeartbeatReply {
		return nil, fmt.Errorf("heartbeat: op %d %q", f.Op, f.Body)
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	return c, nil
}

// benchRead reads fan-out messages (body: 8-byte send time in unix nanos)
// on every connection until each got expect of them, then prints
// "DONE <received> <p50 ns> <p99 ns> <last receive unix nanos>".
func benchRead(conns []*client, expect int) {
	lat := make([][]int64, len(conns))
	var last atomic.Int64
	var total atomic.Int64
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := make([]int64, 0, expect)
			for len(ls) < expect {
				f, err := c.read(time.Minute)
				if err != nil {
					break
				}
				if len(f.Body) < 8 {
					continue
				}
				now := time.Now().UnixNano()
				ls = append(ls, now-int64(binary.BigEndian.Uint64(f.Body)))
				if old := last.Load(); now > old {
					last.CompareAndSwap(old, now)
				}
			}
			lat[i] = ls
			total.Add(int64(len(ls)))
		}()
	}
	wg.Wait()
	var all []int64
	for _, ls := range lat {
		all = append(all, ls...)
	}
	slices.Sort(all)
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(p*float64(len(all)-1))]
	}
	fmt.Println("DONE", total.Load(), pct(0.50), pct(0.99), last.Load())
}

const (
	envBenchMsgs    = "HUBUIM_BENCH_MSGS" // messages per fan-out run; default 100
	benchFanoutBody = 32                  // bytes: 8-byte send time + padding
)

// benchFanout broadcasts messages to one room holding every connection and
// reports deliveries per second and delivery latency (send time to the
// client's read, both on this machine's clock). rate is messages per
// second; 0 sends as fast as the room queues accept.
func benchFanout(b *testing.B, transport string, rate int, mod func(*Config)) {
	n := benchConns(b)
	msgs, _ := strconv.Atoi(os.Getenv(envBenchMsgs))
	if msgs <= 0 {
		msgs = 100
	}
	for i := 0; i < b.N; i++ {
		c := startBenchClient(b, benchClientSpec{Transport: transport, Read: true, Expect: msgs})
		s := startLeanServer(b, c.logicAddr, false, mod)
		addr := s.Addrs().TCP
		if transport == "ws" {
			addr = s.Addrs().WS
		}
		c.dial(b, addr, n)
		time.Sleep(time.Second) // let the AuthReply flushers finish
		start := time.Now()
		for m := 0; m < msgs; m++ {
			if rate > 0 {
				if d := time.Until(start.Add(time.Duration(m) * time.Second / time.Duration(rate))); d > 0 {
					time.Sleep(d)
				}
			}
			body := make([]byte, benchFanoutBody)
			binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
			frame := protocol.AppendFrame(nil, protocol.Version, protocol.OpMsgPush, int32(m), body)
			for _, bk := range s.buckets {
				if !bk.hasRoom(benchRoom) {
					continue
				}
				for bk.queueRoom(benchRoom, frame) != nil {
					time.Sleep(100 * time.Microsecond) // queue full: wait, never drop
				}
			}
		}
		f := strings.Fields(c.waitLine(b, "DONE"))
		total, _ := strconv.ParseInt(f[1], 10, 64)
		p50, _ := strconv.ParseInt(f[2], 10, 64)
		p99, _ := strconv.ParseInt(f[3], 10, 64)
		last, _ := strconv.ParseInt(f[4], 10, 64)
		elapsed := time.Duration(last - start.UnixNano())
		if total != int64(n*msgs) {
			b.Errorf("delivered %d, want %d (slow consumers: %v)", total, n*msgs, counterValue(b, s.m.slowConsumers))
		}
		b.ReportMetric(float64(total)/elapsed.Seconds(), "deliveries/s")
		b.ReportMetric(float64(p50)/1e6, "p50-ms")
		b.ReportMetric(float64(p99)/1e6, "p99-ms")
		b.Logf("%s rate=%d: %d msgs x %d conns = %d deliveries in %v; writes %v frames %v write errors %v",
			transport, rate, msgs, n, total, elapsed, counterValue(b, s.m.writes), counterValue(b, s.m.framesCoalesce), counterValue(b, s.m.writeErrors))
		_ = c.stdin.Close()
		_ = c.cmd.Wait()
	}
}

// BenchmarkFanoutTCP: HUBUIM_BENCH_CONNS=15000 go test -run x -bench Fanout -benchtime 1x
func BenchmarkFanoutTCP(b *testing.B)      { benchFanout(b, "tcp", 0, nil) }
func BenchmarkFanoutTCPRate5(b *testing.B) { benchFanout(b, "tcp", 5, nil) }
func BenchmarkFanoutWS(b *testing.B)       { benchFanout(b, "ws", 0, nil) }

// BenchmarkFanoutTCPNoPoller is BenchmarkFanoutTCP with a reader goroutine
// per connection (Config.DisableTCPPoller), for A/B runs in one binary.
func BenchmarkFanoutTCPNoPoller(b *testing.B) {
	benchFanout(b, "tcp", 0, func(c *Config) { c.DisableTCPPoller = true })
}
