// Package comet is the edge tier: it holds client connections (TCP,
// WebSocket, both optionally over TLS), authenticates them through logic,
// and delivers pushes, room broadcasts and broadcasts from job and logic
// (the gRPC Comet API).
//
// Design, for memory per idle connection (docs/comet-benchmarks.md): on
// Linux an idle plain-TCP connection has no goroutine: its socket is
// watched by a shared epoll poller (pollconn.go, poll_linux.go) that starts
// a reader when data arrives, and the reader exits once the socket has
// nothing more (Config.TCPPollers, Config.DisableTCPPoller). Other
// connections (TLS, WebSocket, other platforms) have one goroutine each
// (the reader, started fresh after the handshake). Readers run anything
// deep - logic calls, gorilla's frame reader - on long-lived deep-stack
// workers (deepstack.go; a short-lived goroutine when all are busy) so that
// a reader's stack stays at 2 KB and the deep call does not grow a fresh
// stack every time; the header is read into
// an array inside the connection and bodies into pooled buffers; a flusher
// goroutine exists only while the connection has queued frames and writes
// all of them in one write (writev on TCP, one OpRaw message on WebSocket);
// handshake and heartbeat deadlines live in shared timing wheels (package
// timer).
//
// Distinct client IP addresses are counted apart from the buckets, in a
// reference count per address sharded by address hash (ipcount.go), updated
// once at authentication and once at close; nothing is stored per
// connection.
//
// Lock order: bucket.mu, then conn.mu; the timing wheels' locks are never
// held while calling out; the IP counter's shard locks are leaves (taken
// with no other lock held). No lock is held during network I/O.
package comet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/comet/timer"
)

const (
	wsPath           = "/sub"
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	drainPoll        = 10 * time.Millisecond
	nonceBytes       = 4
	// maxPooledWriteBuf is the largest coalescing buffer kept in the pool.
	maxPooledWriteBuf = 64 << 10
	// grpcStreamWorkers long-lived goroutines serve the gRPC API's calls
	// (grpc.NumStreamWorkers), so that a handler runs on a stack already
	// grown instead of growing a fresh goroutine's; with all of them busy
	// a call gets a fresh goroutine (grpc-go's default). The handlers are
	// short (queue a frame), but job's pushes arrive in bursts. Not many
	// more than are busy at once: grpc-go hands calls to the workers in
	// turn (longest idle first), and a worker idle through a GC cycle has
	// its stack halved and regrows it. 32 (imbench chat: the comet's
	// newstack share 8% → under 1% with the deep-stack workers; 256 left
	// ~2% in the gRPC handlers).
	grpcStreamWorkers = 32
)

// Deps are the comet's collaborators.
type Deps struct {
	// Logic is the logic tier (required).
	Logic logic.LogicClient
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer registers the comet's metrics; nil does not register.
	Registerer prometheus.Registerer
	// OnDraining is called once when Shutdown starts, before clients are
	// kicked (e.g. to mark this comet draining in discovery). May be nil.
	OnDraining func()
	// ObserveLogicCall, if set, records each Receive call multiplexed on
	// a ReceiveStream (logic.Logic_Receive_FullMethodName), the way the
	// client's unary interceptor records unary calls
	// (grpcmetrics.Observe).
	ObserveLogicCall func(fullMethod string, start time.Time, err error)
}

// Addrs are the bound listener addresses ("" when disabled).
type Addrs struct {
	TCP, WS, WSS, TCPTLS, GRPC string
}

// Server is a comet.
type Server struct {
	cfg        Config
	logic      logic.LogicClient
	log        *slog.Logger
	m          *metrics
	onDraining func()

	buckets []*bucket
	mask    uint32
	wheels  []*timer.Wheel
	pollers []*poller // idle plain-TCP connections (Linux); set by Start
	deep    *deepPool // deep-stack workers for the readers' logic calls
	recv    *receiveMux

	bodyPool      sync.Pool // *[]byte of MaxBody
	writePool     sync.Pool // *[]byte coalescing buffers
	pollReadsPool sync.Pool // *pollReads
	upgrader      websocket.Upgrader
	tlsConfig     *tls.Config

	nonce   string
	connSeq atomic.Uint64
	conns   atomic.Int64 // authenticated connections
	ips     ipCounter    // distinct client IPs of the authenticated connections
	readers atomic.Int64 // connections not finished (handshake, reading or parked)

	draining atomic.Bool
	forced   atomic.Bool

	// lingering holds the connections whose reader finished while their
	// flusher was still writing: no timer reaches them any more, so a
	// forced shutdown closes their sockets from here (a flusher blocked on
	// a client that does not read would otherwise hold Shutdown up to
	// KickWriteTimeout). Lock order: conn.mu, then lingerMu.
	lingerMu  sync.Mutex
	lingering map[*conn]struct{}

	// baseCtx bounds every call to logic; cancelled when a Shutdown runs
	// out of time.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	runCtx     context.Context // wheels, room workers, online loop
	cancelRun  context.CancelFunc
	wg         sync.WaitGroup
	discSem    chan struct{} // bounds concurrent Disconnect calls

	kickDup, kickSlow, kickDrain []byte
	timeoutFrame, drainFrame     []byte

	mu        sync.Mutex
	started   bool
	shutdown  bool
	listeners []net.Listener
	https     []*http.Server
	grpcSrv   *grpc.Server
	addrs     Addrs

	// wsInline serves WebSocket connections on net/http's handler
	// goroutine instead of a fresh one (only to measure the difference).
	wsInline bool
}

// New validates cfg and returns a server; Start or Run starts it.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Logic == nil {
		return nil, ErrNoLogic
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	var nonce [nonceBytes]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		logic:      deps.Logic,
		log:        log.With("component", "comet", "server", cfg.ID),
		m:          m,
		onDraining: deps.OnDraining,
		mask:       uint32(cfg.Buckets - 1),
		nonce:      hex.EncodeToString(nonce[:]),
		discSem:    make(chan struct{}, cfg.DrainParallelism),
	}
	s.ips.gauge = m.clientIPs
	s.deep = newDeepPool(cfg.DeepWorkers, (*conn).runDeep, &s.wg, m)
	s.recv = newReceiveMux(deps.Logic, cfg.LogicStreams, s.log, m.receiveStreams)
	s.recv.observe = deps.ObserveLogicCall
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, errors.Join(errors.New("comet: tls_cert_file/tls_key_file"), err)
		}
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	maxBody := cfg.MaxBody
	s.bodyPool.New = func() any { b := make([]byte, maxBody); return &b }
	s.pollReadsPool.New = newPollReads
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   cfg.WSReadBufferSize,
		WriteBufferSize:  cfg.WSWriteBufferSize,
		WriteBufferPool:  &sync.Pool{},
		// Clients authenticate with a token in the Auth packet; any origin
		// may connect.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.buckets = make([]*bucket, cfg.Buckets)
	for i := range s.buckets {
		s.buckets[i] = newBucket(s)
	}
	s.wheels = make([]*timer.Wheel, cfg.TimerWheels)
	for i := range s.wheels {
		if s.wheels[i], err = timer.New(timer.Config{Tick: cfg.TimerTick}); err != nil {
			return nil, err
		}
	}
	s.kickDup = kickFrame(protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN, "another connection logged in with this key")
	s.kickSlow = kickFrame(protocol.KickReason_KICK_REASON_SLOW_CONSUMER, "outbound queue full")
	s.kickDrain = kickFrame(protocol.KickReason_KICK_REASON_SERVER_DRAINING, "server draining")
	s.timeoutFrame = disconnectFrame("timeout: no auth or heartbeat in time")
	s.drainFrame = disconnectFrame(ErrDraining.Error())
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.runCtx, s.cancelRun = context.WithCancel(context.Background())
	return s, nil
}

// Config returns the effective configuration (defaults filled in).
func (s *Server) Config() Config { return s.cfg }

// Conns returns the number of authenticated connections.
func (s *Server) Conns() int64 { return s.conns.Load() }

// IPCount returns the number of distinct client IP addresses of the
// authenticated connections (TCP, WebSocket, TLS), as seen on the socket
// (a proxy in front of the comet counts as one address).
func (s *Server) IPCount() int64 { return s.ips.count() }

// Draining reports whether Shutdown has started.
func (s *Server) Draining() bool { return s.draining.Load() }

// Addrs returns the bound addresses; valid after Start.
func (s *Server) Addrs() Addrs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs
}

// API returns the gRPC Comet API implementation (for in-process use).
func (s *Server) API() cometapi.CometServer { return &api{s: s} }

func (s *Server) bucketFor(key string) *bucket { return s.buckets[fnv32a(key)&s.mask] }

// Start binds the configured listeners and starts serving. On error every
// listener bound so far is closed.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return ErrStarted
	}
	s.started = true
	var ls []net.Listener
	fail := func(err error) error {
		for _, l := range ls {
			_ = l.Close()
		}
		s.cancelRun()
		return err
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			ls = append(ls, l)
		}
		return l, err
	}
	var tcpL, tlsL, wsL, wssL, grpcL net.Listener
	var err error
	defer func() {
		// Shutdown closes the accept loops' listeners itself; net/http and
		// gRPC close their own.
		for _, l := range []net.Listener{tcpL, tlsL} {
			if l != nil {
				s.listeners = append(s.listeners, l)
			}
		}
	}()
	for _, x := range []struct {
		addr string
		l    *net.Listener
		out  *string
	}{
		{s.cfg.TCPAddr, &tcpL, &s.addrs.TCP},
		{s.cfg.TCPTLSAddr, &tlsL, &s.addrs.TCPTLS},
		{s.cfg.WSAddr, &wsL, &s.addrs.WS},
		{s.cfg.WSSAddr, &wssL, &s.addrs.WSS},
		{s.cfg.GRPCAddr, &grpcL, &s.addrs.GRPC},
	} {
		if x.addr == "" {
			continue
		}
		if *x.l, err = listen(x.addr); err != nil {
			return fail(err)
		}
		*x.out = (*x.l).Addr().String()
	}

	if tcpL != nil && !s.cfg.DisableTCPPoller {
		if err := s.startPollers(); err != nil {
			return fail(err)
		}
	}
	for _, w := range s.wheels {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); w.Run(s.runCtx) }()
	}
	s.deep.start()
	for _, b := range s.buckets {
		for _, q := range b.queues {
			s.wg.Add(1)
			go b.roomWorker(q, s.runCtx.Done())
		}
	}
	s.wg.Add(1)
	go s.onlineLoop()

	if tcpL != nil {
		s.wg.Add(1)
		go s.acceptLoop(tcpL, transportTCP, nil)
	}
	if tlsL != nil {
		s.wg.Add(1)
		go s.acceptLoop(tlsL, transportTCPTLS, s.tlsConfig)
	}
	if wsL != nil {
		s.serveHTTP(wsL, transportWS)
	}
	if wssL != nil {
		s.serveHTTP(tls.NewListener(wssL, s.tlsConfig), transportWSS)
	}
	if grpcL != nil {
		s.grpcSrv = grpc.NewServer(grpc.UnaryInterceptor(s.m.grpc.UnaryServerInterceptor()),
			grpc.NumStreamWorkers(grpcStreamWorkers))
		cometapi.RegisterCometServer(s.grpcSrv, s.API())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.grpcSrv.Serve(grpcL); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.log.Error("grpc serve", "err", err)
			}
		}()
	}
	s.log.Info("comet started", "tcp", s.addrs.TCP, "ws", s.addrs.WS, "wss", s.addrs.WSS,
		"tcp_tls", s.addrs.TCPTLS, "grpc", s.addrs.GRPC, "buckets", s.cfg.Buckets)
	return nil
}

// Run starts the server, waits for ctx and shuts down within DrainTimeout.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}

// startPollers starts the TCP pollers (none where unsupported). They stop
// when runCtx ends; Shutdown releases them once every goroutine is gone.
func (s *Server) startPollers() error {
	for range s.cfg.TCPPollers {
		p, err := newPoller()
		if errors.Is(err, errPollUnsupported) {
			break
		}
		if err != nil {
			for _, p := range s.pollers {
				p.close()
			}
			s.pollers = nil
			return err
		}
		s.pollers = append(s.pollers, p)
	}
	for _, p := range s.pollers {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); p.run() }()
		context.AfterFunc(s.runCtx, p.stop)
	}
	return nil
}

func (s *Server) serveHTTP(l net.Listener, transport string) {
	mux := http.NewServeMux()
	mux.HandleFunc(wsPath, func(w http.ResponseWriter, r *http.Request) { s.handleWS(w, r, transport) })
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.https = append(s.https, hs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("websocket serve", "transport", transport, "err", err)
		}
	}()
}

func (s *Server) acceptLoop(l net.Listener, transport string, tlsCfg *tls.Config) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.runCtx.Err() != nil {
				return
			}
			// Like net/http: back off on errors such as EMFILE.
			if delay == 0 {
				delay = acceptBackoffMin
			} else if delay *= 2; delay > acceptBackoffMax {
				delay = acceptBackoffMax
			}
			s.log.Warn("accept error; retrying", "transport", transport, "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.runCtx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		s.m.accepted.WithLabelValues(transport).Inc()
		c := s.newConn(nc)
		if tlsCfg != nil {
			c.nc = tls.Server(nc, tlsCfg)
			c.writev = false
		}
		s.startConn(c)
	}
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request, transport string) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered with an HTTP error
	}
	s.m.accepted.WithLabelValues(transport).Inc()
	nc := ws.UnderlyingConn()
	c := s.newConn(nc)
	if tc, ok := nc.(*tls.Conn); ok {
		c.raw = tc.NetConn()
	}
	c.ws = ws
	c.writev = false
	ws.SetReadLimit(int64(s.cfg.MaxBody + protocol.HeaderLen))
	// Serve from a fresh goroutine and let net/http's deep stack go
	// (measured: see docs/comet-benchmarks.md; wsInline is the comparison).
	if s.wsInline {
		if s.registerConn(c) {
			s.handshake(c, true)
		}
		return
	}
	s.startConn(c)
}

func (s *Server) newConn(nc net.Conn) *conn {
	seq := s.connSeq.Add(1)
	c := &conn{
		srv:   s,
		seq:   seq,
		id:    s.nonce + "-" + strconv.FormatUint(seq, 36),
		nc:    nc,
		raw:   nc,
		wheel: s.wheels[seq%uint64(len(s.wheels))],
	}
	_, c.writev = nc.(*net.TCPConn)
	c.tm.Init(c)
	return c
}

// startConn starts a connection's goroutine unless Shutdown has begun
// (checked under s.mu so that no goroutine is added once Shutdown waits).
func (s *Server) startConn(c *conn) {
	if s.registerConn(c) {
		go s.handshake(c, false)
	}
}

func (s *Server) registerConn(c *conn) bool {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		c.closeSocket()
		return false
	}
	s.readers.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()
	c.wheel.Set(&c.tm, s.cfg.HandshakeTimeout)
	return true
}

func (s *Server) getWriteBuf(n int) *[]byte {
	if bp, ok := s.writePool.Get().(*[]byte); ok && cap(*bp) >= n {
		return bp
	}
	b := make([]byte, 0, n)
	return &b
}

func (s *Server) putWriteBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledWriteBuf {
		s.writePool.Put(bp)
	}
}

// onlineLoop sends room counts to logic and stores the cluster-wide ones.
func (s *Server) onlineLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.OnlineInterval)
	defer t.Stop()
	for {
		select {
		case <-s.runCtx.Done():
			return
		case <-t.C:
			s.renewOnline()
		}
	}
}

func (s *Server) renewOnline() {
	local := make(map[string]int32)
	for _, b := range s.buckets {
		b.roomCounts(local)
	}
	ctx, cancel := context.WithTimeout(s.runCtx, s.cfg.LogicTimeout)
	defer cancel()
	reply, err := s.logic.RenewOnline(ctx, &logic.OnlineReq{Server: s.cfg.ID, RoomCount: local})
	if err != nil {
		s.m.logicErrors.WithLabelValues("RenewOnline").Inc()
		s.log.Warn("renew online", "err", err)
		return
	}
	for _, b := range s.buckets {
		b.setOnline(reply.GetAllRoomCount(), local)
	}
}

// kickAll kicks every registered connection with SERVER_DRAINING, with at
// most DrainParallelism kicked connections not yet closed at a time. It
// returns ctx's error if ctx ends first.
func (s *Server) kickAll(ctx context.Context) error {
	var all []*conn
	for _, b := range s.buckets {
		all = b.snapshot(all)
	}
	defer clear(all)
	initial := s.conns.Load()
	limit := int64(s.cfg.DrainParallelism)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	// Kick i is due at start + spread*i/n: reconnects arrive at the other
	// comets as a steady stream, not a thundering herd.
	start, spread, n := time.Now(), s.cfg.DrainSpread, time.Duration(len(all))
	due := time.NewTimer(0)
	defer due.Stop()
	for i, c := range all {
		if wait := time.Until(start.Add(spread * time.Duration(i) / n)); spread > 0 && wait > 0 {
			due.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-due.C:
			}
		}
		// in flight = kicked so far - connections gone since the start.
		for int64(i)-(initial-s.conns.Load()) >= limit {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		c.kick(s.kickDrain, protocol.KickReason_KICK_REASON_SERVER_DRAINING, false)
	}
	return nil
}

// Shutdown stops accepting, marks the server draining (Deps.OnDraining),
// kicks every client with SERVER_DRAINING (spread over DrainSpread), waits
// for them to be written,
// closed and disconnected from logic, and stops every goroutine. When ctx
// ends first, the remaining connections are closed at once and logic calls
// are cancelled; Shutdown then returns ctx's error after the goroutines
// are gone.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.shutdown = true
	ls, hs, gs := s.listeners, s.https, s.grpcSrv
	s.mu.Unlock()

	s.draining.Store(true)
	if s.onDraining != nil {
		s.onDraining()
	}
	for _, l := range ls {
		_ = l.Close()
	}
	for _, h := range hs {
		_ = h.Close()
	}

	err := s.kickAll(ctx)
	if err == nil {
		// Registered connections are all closing now; this closes the
		// ones still authenticating instead of waiting for their timeout.
		for _, w := range s.wheels {
			w.ExpireAll()
		}
	}
	t := time.NewTicker(drainPoll)
	for err == nil && s.readers.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
		}
	}
	t.Stop()
	if err != nil {
		s.log.Warn("shutdown deadline: closing remaining connections", "readers", s.readers.Load())
		s.force()
	}
	if gs != nil {
		if err != nil {
			gs.Stop()
		} else {
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				gs.Stop()
				<-stopped
				err = ctx.Err()
			}
		}
	}
	s.cancelRun()
	s.deep.close()
	// Every reader may be done while a flusher still writes to a client
	// that does not read (bounded by KickWriteTimeout only): the deadline
	// closes those sockets too. (Shutdown waited for such a flusher for
	// good once in CI.)
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		if err == nil {
			s.log.Warn("shutdown deadline: closing connections still writing")
			err = ctx.Err()
		}
		s.force()
		<-waited
	}
	// No reader is left to make a Receive call.
	s.recv.close(ctx)
	// Every connection has finished: none is parked or can be armed.
	for _, p := range s.pollers {
		p.close()
	}
	s.cancelBase()
	s.log.Info("comet stopped", "forced", err != nil)
	return err
}

// force closes what is left at the shutdown deadline: calls to logic are
// cancelled, every connection's timer expires (closing its socket), and
// so do the sockets of connections whose reader finished while their
// flusher still writes.
func (s *Server) force() {
	s.forced.Store(true)
	s.cancelBase()
	for _, w := range s.wheels {
		w.ExpireAll()
	}
	s.closeLingering()
}

// linger records c, whose reader finished while its flusher still writes.
// c.mu is held.
func (s *Server) linger(c *conn) {
	s.lingerMu.Lock()
	if s.lingering == nil {
		s.lingering = make(map[*conn]struct{})
	}
	s.lingering[c] = struct{}{}
	s.lingerMu.Unlock()
}

// unlinger forgets c once its flusher is done. c.mu is held.
func (s *Server) unlinger(c *conn) {
	s.lingerMu.Lock()
	delete(s.lingering, c)
	s.lingerMu.Unlock()
}

// closeLingering closes the sockets of the lingering connections: their
// flushers' writes fail and they finish (forced shutdown).
func (s *Server) closeLingering() {
	s.lingerMu.Lock()
	conns := make([]*conn, 0, len(s.lingering))
	for c := range s.lingering {
		conns = append(conns, c)
	}
	s.lingerMu.Unlock()
	for _, c := range conns {
		c.closeSocket()
	}
}
