package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"google.golang.org/protobuf/proto"
)

const heartbeatReplyLen = 4 // int32 room online count

// session is one authenticated connection.
type session struct {
	conn    frameConn
	addr    string
	done    chan struct{}
	gone    chan struct{} // closed once the client no longer offers it
	once    sync.Once
	err     error // why the session ended; set before done is closed
	online  atomic.Int32
	hbReply chan struct{}
	wg      sync.WaitGroup

	// scratch is the reader's reusable list of deliverable messages.
	scratch []*protocol.Msg

	mu      sync.Mutex
	pending map[int32]chan reply // request replies by seq
}

func newSession(conn frameConn, addr string) *session {
	return &session{
		conn:    conn,
		addr:    addr,
		done:    make(chan struct{}),
		gone:    make(chan struct{}),
		hbReply: make(chan struct{}, 1),
		pending: make(map[int32]chan reply),
	}
}

// closeWith ends the session with err (the first reason wins).
func (s *session) closeWith(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
		_ = s.conn.close()
	})
}

func (s *session) write(op, seq int32, body []byte) error {
	err := s.conn.writeFrame(op, seq, body)
	if err != nil {
		s.closeWith(fmt.Errorf("write: %w", err))
	}
	return err
}

// reply is what a pending request gets: the frame, or why there is none.
type reply struct {
	f   protocol.Frame
	err error
}

func (s *session) register(seq int32) chan reply {
	ch := make(chan reply, 1)
	s.mu.Lock()
	s.pending[seq] = ch
	s.mu.Unlock()
	return ch
}

func (s *session) unregister(seq int32) {
	s.mu.Lock()
	delete(s.pending, seq)
	s.mu.Unlock()
}

// deliverReply hands f to the request waiting for its seq.
func (s *session) deliverReply(f protocol.Frame) bool {
	if f.Seq == 0 {
		return false
	}
	s.mu.Lock()
	ch, ok := s.pending[f.Seq]
	delete(s.pending, f.Seq)
	s.mu.Unlock()
	if !ok {
		return false
	}
	f.Body = append([]byte(nil), f.Body...)
	ch <- reply{f: f} // buffered, one reply per seq
	return true
}

// failReply tells the request waiting for seq that its reply will not
// come (it was too large to receive); false if none waits.
func (s *session) failReply(seq int32, err error) bool {
	s.mu.Lock()
	ch, ok := s.pending[seq]
	delete(s.pending, seq)
	s.mu.Unlock()
	if ok {
		ch <- reply{err: err}
	}
	return ok
}

// serve runs one connection until it ends and returns why.
func (c *Client) serve(s *session) error {
	c.m.inc(mConnects)
	stop := context.AfterFunc(c.ctx, func() { s.closeWith(ErrClosed) })
	defer stop()

	// Publish first: once Connect returns, Send and Request go out at once.
	c.mu.Lock()
	c.sess = s
	close(c.ready)
	mid, key, room := c.mid, c.key, c.roomID
	c.mu.Unlock()
	c.upOnce.Do(func() { close(c.firstUp) })
	c.log.Info("hubuim client: connected", "addr", s.addr, "mid", mid, "key", key)
	// Connected precedes every event of this connection: the reader that
	// produces them starts below.
	c.emit(Connected{Mid: mid, Key: key, RoomID: room, Addr: s.addr})

	s.wg.Add(2)
	go c.heartbeatLoop(s)
	go c.maintainLoop(s)

	c.startCursorSync(s)
	err := c.readLoop(s)
	s.closeWith(err)
	c.mu.Lock()
	c.sess = nil
	c.ready = make(chan struct{})
	c.mu.Unlock()
	close(s.gone)
	s.wg.Wait()
	c.resetPulls()
	// What the server said wins over a local reason the session was
	// closed for first (a heartbeat that gave up, a failed write while the
	// reader was still handing events over): a fatal kick read after that
	// must still stop the reconnects.
	if _, kicked := errors.AsType[*KickedError](err); kicked {
		return err
	}
	if _, closed := errors.AsType[*ServerClosedError](err); closed {
		return err
	}
	return s.err
}

func (c *Client) readLoop(s *session) error {
	for {
		f, err := s.conn.readFrame()
		if err != nil {
			if oversize, ok := errors.AsType[*OversizeError](err); ok {
				c.handleOversize(s, oversize)
				continue
			}
			select {
			case <-s.done:
				return s.err // closed on purpose; that is the reason
			default:
				return err
			}
		}
		if err := c.dispatch(s, f, false); err != nil {
			return err
		}
	}
}

// dispatch handles one inbound frame. An error ends the connection.
func (c *Client) dispatch(s *session, f protocol.Frame, inRaw bool) error {
	switch f.Op {
	case protocol.OpHeartbeatReply:
		if len(f.Body) >= heartbeatReplyLen {
			s.online.Store(int32(binary.BigEndian.Uint32(f.Body)))
		}
		select {
		case s.hbReply <- struct{}{}:
		default:
		}
	case protocol.OpRaw:
		if inRaw {
			return fmt.Errorf("%w: OpRaw nested in OpRaw", ErrProtocol)
		}
		err := protocol.SplitRaw(f.Body, c.cfg.MaxInboundBody, func(inner protocol.Frame) error {
			return c.dispatch(s, inner, true)
		})
		if err != nil {
			return fmt.Errorf("%w: OpRaw: %w", ErrProtocol, err)
		}
	case protocol.OpMsgSendAck:
		var ack protocol.MsgSendAck
		if c.decode(f, &ack) {
			c.handleAck(s, &ack)
		}
	case protocol.OpMsgPush:
		var m protocol.Msg
		if c.decode(f, &m) {
			if m.ConvId == "" {
				c.emit(Error{Err: fmt.Errorf("%w: MsgPush without conversation id", ErrProtocol)})
				return nil
			}
			c.handlePush(s, &m, false)
		}
	case protocol.OpSyncReply:
		var r protocol.SyncReply
		if c.decode(f, &r) {
			c.handleSyncReply(s, f.Seq, &r)
		}
	case protocol.OpMsgNotify:
		var n protocol.MsgNotify
		if c.decode(f, &n) {
			c.emit(Notify{ConvID: n.ConvId, MaxSeq: n.MaxSeq})
			c.handleNotify(s, &n)
		}
	case protocol.OpReadMark:
		rm := new(protocol.ReadMark)
		if c.decode(f, rm) {
			c.emit(ReadMark{rm})
		}
	case protocol.OpPresenceEvent:
		p := new(protocol.PresenceEvent)
		if c.decode(f, p) && c.latestPresence(p) {
			c.emit(Presence{p})
		}
	case protocol.OpKick:
		k := decodeKick(f.Body)
		c.emit(Kicked{Reason: k.Reason, Message: k.Message})
		return k
	case protocol.OpDisconnectReply:
		return &ServerClosedError{Reason: string(f.Body)}
	case protocol.OpHandshake, protocol.OpHandshakeReply, protocol.OpAuthReply,
		protocol.OpProtoReady, protocol.OpProtoFinish:
		// Reserved or handshake-only ops: nothing to deliver.
	default:
		if s.deliverReply(f) {
			return nil
		}
		c.emit(Push{Op: f.Op, Seq: f.Seq, Body: append([]byte(nil), f.Body...)})
	}
	return nil
}

// decode unmarshals a protobuf body; a bad body is reported as an Error
// event and the frame is skipped.
func (c *Client) decode(f protocol.Frame, m proto.Message) bool {
	if err := proto.Unmarshal(f.Body, m); err != nil {
		c.emit(Error{Err: fmt.Errorf("%w: op %d body: %w", ErrProtocol, f.Op, err)})
		return false
	}
	return true
}

func decodeKick(body []byte) *KickedError {
	var k protocol.Kick
	if err := proto.Unmarshal(body, &k); err != nil {
		return &KickedError{Message: "undecodable kick body"}
	}
	return &KickedError{Reason: k.Reason, Message: k.Message}
}

// heartbeatLoop sends heartbeats at the adaptive interval and replaces the
// connection when one is met by silence.
func (c *Client) heartbeatLoop(s *session) {
	defer s.wg.Done()
	t := time.NewTimer(c.hb.get())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.done:
			return
		}
		select { // drop a stale reply
		case <-s.hbReply:
		default:
		}
		before := s.conn.received()
		if s.write(protocol.OpHeartbeat, c.nextSeq(), nil) != nil {
			return
		}
		t.Reset(c.cfg.HeartbeatTimeout)
		select {
		case <-s.hbReply:
			c.hb.success()
			t.Stop()
		case <-t.C:
			c.hb.failure()
			if s.conn.received() == before {
				s.closeWith(ErrDeadConnection)
				return
			}
		case <-s.done:
			return
		}
		t.Reset(c.hb.get())
	}
}

// maintainLoop flushes coalesced delivered acks, retries pulls whose
// reply did not come and pulls gaps that did not fill within GapGrace.
func (c *Client) maintainLoop(s *session) {
	defer s.wg.Done()
	period := min(c.cfg.AckInterval, c.cfg.SendTimeout)
	ackEvery := max(1, int(c.cfg.AckInterval/period))
	tick := time.NewTicker(period)
	defer tick.Stop()
	gapTimer := time.NewTimer(0)
	gapTimer.Stop()
	defer gapTimer.Stop()
	for n := 0; ; {
		select {
		case <-tick.C:
			n++
		case <-c.gapWake:
			if due := c.nextGapDue(); !due.IsZero() {
				gapTimer.Reset(time.Until(due))
			}
			continue
		case <-gapTimer.C:
			c.pullStuckGaps(s)
			if due := c.nextGapDue(); !due.IsZero() {
				gapTimer.Reset(time.Until(due))
			}
			continue
		case <-s.done:
			return
		}
		if n%ackEvery == 0 {
			if c.flushAcks(s, false) != nil {
				return
			}
		}
		c.retryPulls(s)
	}
}

// sessionErr reports whether err means the session ended.
func sessionErr(s *session) error {
	select {
	case <-s.done:
		if s.err == nil {
			return ErrDisconnected
		}
		return errors.Join(ErrDisconnected, s.err)
	default:
		return nil
	}
}

// flushAcks sends the delivered acks due (all: one per conversation that
// moved since its last ack).
func (c *Client) flushAcks(s *session, all bool) error {
	for _, a := range c.pendingAcks(all) {
		body, _ := proto.Marshal(a)
		if err := s.write(protocol.OpMsgDeliveredAck, c.nextSeq(), body); err != nil {
			return err
		}
		c.m.inc(mAcks)
	}
	return nil
}

// latestPresence reports whether p is newer than every presence event of
// its user seen so far (always, when p carries no version), and records
// it.
func (c *Client) latestPresence(p *protocol.PresenceEvent) bool {
	v := p.GetVersion()
	if v == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v <= c.presence[p.GetUser()] {
		c.m.inc(mPresenceStale)
		return false
	}
	if c.presence == nil || len(c.presence) >= maxPresenceUsers {
		// Bounded: forgetting lets an overtaken event through (rare).
		c.presence = make(map[int64]int64)
	}
	c.presence[p.GetUser()] = v
	return true
}

// maxPresenceUsers bounds the presence versions a client remembers.
const maxPresenceUsers = 1 << 16
