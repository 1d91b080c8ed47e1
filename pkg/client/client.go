package client

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Client is one device's connection to HubuIM. It reconnects by itself
// until it is closed. All methods are safe for concurrent use.
//
// Locks: mu (connection, identity, pending sends), convMu (receive state)
// and session.mu (pending requests) are never held together, and none is
// held across network I/O or while sending on Events.
type Client struct {
	cfg    Config
	log    *slog.Logger
	m      *Metrics
	events chan Event
	// eventsCut is set once an event could not be emitted because the
	// client stopped: every later one is dropped too, so the app never
	// sees a message after a dropped one (see deliver).
	eventsCut atomic.Bool
	ids       IDGen
	hb        *adaptiveInterval
	// cfgBackoff is the configured reconnect backoff; backoff is the one
	// in use: cfgBackoff stretched by the node list's hints (applyHints).
	// Both belong to runLoop.
	cfgBackoff Backoff
	backoff    Backoff
	// nodeHeartbeat is the last node list's heartbeat hint (0: none);
	// runLoop's, like backoff.
	nodeHeartbeat time.Duration
	seq           atomic.Int32

	ctx      context.Context // ends on Close or when Run's context ends
	cancel   context.CancelFunc
	started  atomic.Bool
	loopDone chan struct{} // closed when the connection loop has exited
	firstUp  chan struct{} // closed on the first authenticated connection
	upOnce   sync.Once
	wg       sync.WaitGroup // the loop goroutine started by Connect
	loopErr  error          // set (under mu) before Events and loopDone are closed

	mu      sync.Mutex
	sess    *session      // nil while disconnected
	ready   chan struct{} // closed when sess becomes non-nil
	mid     int64
	key     string
	roomID  string
	accepts []int32
	sends   map[string]*pendingSend // unacknowledged sends by client msg id
	dialErr error                   // the last failed connection attempt's error
	// presence is the greatest presence version seen per user: an event
	// with a smaller one was overtaken (see Presence).
	presence map[int64]int64

	convMu     sync.Mutex
	convs      map[string]*convState
	syncs      map[int32]syncReq // outstanding Sync requests by frame seq
	cursorSync syncReq           // outstanding Sync with cursors (seq 0: none)
	activity   uint64            // bumped whenever a conversation's contig moves
	gapDue     time.Time         // when the gap timer fires (zero: not armed)
	pushLag    time.Duration     // mean time a push arrives after the own ACK above it
	ackEpoch   uint64            // delivered-ack flushes so far
	// cursorSent holds the cursors the outstanding cursor sync carries,
	// by conversation; cursorSynced the conversations a round of this
	// connection's cursor syncs showed up to date (their cursors go last
	// in the next round, to make room for cursors not sent yet).
	cursorSent   map[string]int64
	cursorSynced map[string]struct{}
	// cursorAfter is the last conversation without a cursor that a round
	// of this connection's cursor syncs returned (Sync.after_conv_id).
	cursorAfter string
	// ackMaxEpochs is AckMaxDelay in flushes: a conversation that keeps
	// moving is acked every ackMaxEpochs flushes.
	ackMaxEpochs uint64

	// gapWake tells the connection's maintainLoop that gapDue moved.
	gapWake chan struct{}

	timers sync.Pool // stopped *time.Timer for Send
}

// New checks cfg and returns a client that is not connected yet; call Run
// or Connect.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:        cfg,
		log:        cfg.Logger,
		m:          cfg.Metrics,
		events:     make(chan Event, cfg.EventBuffer),
		hb:         newAdaptiveInterval(cfg.HeartbeatMin, cfg.HeartbeatMax, cfg.HeartbeatStep, cfg.HeartbeatGrowAfter),
		cfgBackoff: Backoff{Base: cfg.BackoffBase, Max: cfg.BackoffMax, Factor: cfg.BackoffFactor, Jitter: cfg.BackoffJitter},
		ctx:        ctx,
		cancel:     cancel,

		loopDone: make(chan struct{}),
		firstUp:  make(chan struct{}),
		ready:    make(chan struct{}),
		mid:      cfg.Mid,
		key:      cfg.Key,
		roomID:   cfg.RoomID,
		accepts:  slices.Clone(cfg.Accepts),
		sends:    make(map[string]*pendingSend),
		convs:    make(map[string]*convState, len(cfg.Cursors)),
		syncs:    make(map[int32]syncReq),
		gapWake:  make(chan struct{}, 1),

		ackMaxEpochs: max(1, uint64((cfg.AckMaxDelay+cfg.AckInterval-1)/cfg.AckInterval)),
	}
	c.backoff = c.cfgBackoff
	for conv, seq := range cfg.Cursors {
		c.convs[conv] = &convState{contig: seq, acked: seq, target: seq}
	}
	return c, nil
}

// Events is the channel every Event is delivered on. It is closed when the
// client stops. The app must drain it: when it is full, the connection's
// reader blocks (backpressure) — inbound frames, heartbeat replies and ACKs
// then wait in the socket, Send calls stall, the heartbeat may declare the
// connection dead and reconnect, and the server may kick the connection as
// a slow consumer. Do not call Send from the only goroutine draining Events
// when the buffer may be full.
func (c *Client) Events() <-chan Event { return c.events }

// Run connects and keeps the client connected until ctx ends or Close is
// called; it returns nil after Close, ctx.Err() when ctx ended, and a
// *KickedError after a kick that must not be answered by reconnecting
// (duplicate login, admin). A client runs once: a second Run or Connect
// returns ErrAlreadyStarted, and one after Close returns ErrClosed.
func (c *Client) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return c.startErr()
	}
	stop := context.AfterFunc(ctx, c.cancel)
	defer stop()
	err := c.runLoop()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return err
}

// Connect starts the client in the background and returns once it is
// connected and authenticated. When ctx ends first, the client is closed
// and ctx.Err() is returned, joined with the last connection attempt's
// error (errors.Is finds ErrAuth for a rejected token). A fatal kick at
// auth ends it with the *KickedError. A client runs once.
func (c *Client) Connect(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return c.startErr()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = c.runLoop()
	}()
	select {
	case <-c.firstUp:
		return nil
	case <-c.loopDone:
		if c.loopErr != nil {
			return c.loopErr
		}
		return ErrClosed
	case <-ctx.Done():
		c.Close()
		c.mu.Lock()
		last := c.dialErr
		c.mu.Unlock()
		if last != nil { // why the attempts failed (refused, auth rejected)
			return errors.Join(ctx.Err(), last)
		}
		return ctx.Err()
	}
}

// Close disconnects and stops every goroutine of the client; Events is
// closed. Pending Send and Request calls return ErrClosed. Delivered acks
// not yet flushed are sent first (bounded by WriteTimeout).
func (c *Client) Close() {
	if s := c.session(); s != nil && c.ctx.Err() == nil {
		c.flushAcks(s, true)
	}
	c.cancel()
	if c.started.CompareAndSwap(false, true) {
		// Never started: nothing runs; close what the loop would have.
		close(c.events)
		close(c.loopDone)
		return
	}
	<-c.loopDone
	c.wg.Wait()
}

// Done is closed when the client has stopped: after Close, after Run's
// context ended, or after a kick that ends it (see Err).
func (c *Client) Done() <-chan struct{} { return c.loopDone }

// Err is why the client stopped by itself (a *KickedError): set once
// Events is closed (and Done), nil otherwise. (It was read from Done
// alone, which closes after Events: an app that saw Events closed could
// get nil; imctl listen exited 0 after a kick once in CI.)
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loopErr
}

// setLoopErr records why the loop ends, before it closes Events.
func (c *Client) setLoopErr(err error) {
	c.mu.Lock()
	c.loopErr = err
	c.mu.Unlock()
}

func (c *Client) startErr() error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return ErrAlreadyStarted
}

// Mid is the user id (as confirmed by the server once connected).
func (c *Client) Mid() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mid
}

// Key is the device key (server-assigned when Config.Key was empty).
func (c *Client) Key() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key
}

// HeartbeatInterval is the current adaptive heartbeat interval.
func (c *Client) HeartbeatInterval() time.Duration { return c.hb.get() }

// RoomOnline is the online count of the connection's room from the last
// heartbeat reply (0 before the first one or while disconnected).
func (c *Client) RoomOnline() int32 {
	s := c.session()
	if s == nil {
		return 0
	}
	return s.online.Load()
}

func (c *Client) nextSeq() int32 {
	for {
		// Keep seqs positive and skip 0, which servers use for pushes.
		if v := c.seq.Add(1) & math.MaxInt32; v != 0 {
			return v
		}
	}
}

// emit delivers ev, blocking while the channel is full, unless the client
// stops.
func (c *Client) emit(ev Event) bool {
	if c.eventsCut.Load() {
		return false
	}
	// With room in the buffer the event goes in even when the client is
	// stopping (a select with both cases ready picks one at random).
	select {
	case c.events <- ev:
		return true
	default:
	}
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		c.eventsCut.Store(true)
		return false
	}
}

func (c *Client) session() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// waitSession returns the current connection, waiting for one.
func (c *Client) waitSession(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ready := c.sess, c.ready
		c.mu.Unlock()
		if s != nil {
			select {
			case <-s.done:
				ready = s.gone // ending: wait until it is withdrawn
			default:
				return s, nil
			}
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// runLoop connects, serves the connection and reconnects with backoff
// until the client stops. It is the only sender on Events besides the
// connection's reader, which it runs, so it closes Events at the end.
func (c *Client) runLoop() error {
	defer close(c.loopDone)
	defer close(c.events)
	attempt := 0
	for c.ctx.Err() == nil {
		s, err := c.dialAny()
		if err != nil {
			if c.ctx.Err() != nil {
				break
			}
			c.m.inc(mConnectFailures)
			c.log.Warn("hubuim client: connect failed", "attempt", attempt, "err", err)
			c.mu.Lock()
			c.dialErr = err
			c.mu.Unlock()
			c.emit(Error{Err: err})
			// A server that kicks at auth for good (banned, replaced) is
			// not asked again, as after a kick on a live connection.
			if kick, ok := errors.AsType[*KickedError](err); ok && kick.fatal() {
				c.setLoopErr(kick)
				break
			}
			if !c.sleep(c.backoff.Delay(attempt, rand.Float64())) {
				break
			}
			attempt++
			continue
		}
		began := time.Now()
		err = c.serve(s)
		c.m.inc(mDisconnects)
		if c.ctx.Err() != nil {
			c.emit(Disconnected{Err: ErrClosed})
			break
		}
		c.log.Info("hubuim client: disconnected", "addr", s.addr, "err", err)
		c.emit(Disconnected{Err: err})
		var kick *KickedError
		if errors.As(err, &kick) && kick.fatal() {
			c.setLoopErr(kick)
			break
		}
		// A connection that did not last HeartbeatMin counts as a failed
		// attempt, so a server that accepts and drops at once is not
		// hammered; one that lasted resets the backoff.
		if time.Since(began) >= c.cfg.HeartbeatMin {
			attempt = 0
		}
		if !c.sleep(c.backoff.Delay(attempt, rand.Float64())) {
			break
		}
		attempt++
	}
	c.cancel()
	return c.loopErr
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}
