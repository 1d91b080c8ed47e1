package comet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
)

const (
	countBodyLen    = 4
	maxReasonLen    = 120 // bytes of a logic error echoed to the client
	wsCloseDeadline = time.Second
)

// authReply is the AuthReply (op 8) body.
type authReply struct {
	Mid         int64  `json:"mid"`
	Key         string `json:"key"`
	RoomID      string `json:"room_id"`
	HeartbeatMS int64  `json:"heartbeat_ms"`
}

func kickFrame(reason protocol.KickReason, msg string) []byte {
	body, _ := proto.Marshal(&protocol.Kick{Reason: reason, Message: msg})
	return protocol.AppendFrame(nil, protocol.Version, protocol.OpKick, 0, body)
}

func disconnectFrame(reason string) []byte {
	return protocol.AppendFrame(nil, protocol.Version, protocol.OpDisconnectReply, 0, []byte(reason))
}

func reasonLabel(r protocol.KickReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "KICK_REASON_"))
}

// errLabel names a read error for the protocol error metric; "" means the
// peer went away (not a protocol error).
func errLabel(err error) string {
	switch {
	case errors.Is(err, protocol.ErrHeaderLen):
		return "header_len"
	case errors.Is(err, protocol.ErrPackLen):
		return "pack_len"
	case errors.Is(err, ErrTextFrame):
		return "ws_text_frame"
	case errors.Is(err, ErrExtraData), errors.Is(err, protocol.ErrTruncated):
		return "ws_bad_message"
	case errors.Is(err, websocket.ErrReadLimit):
		return "pack_len"
	}
	return ""
}

// readFrame reads one client frame. The body, if any, is in a pooled
// buffer the caller returns with putBody.
func (c *conn) readFrame() (protocol.Frame, *[]byte, error) {
	if c.ws != nil {
		return c.readWS()
	}
	h, err := protocol.ReadHeader(c.nc, &c.hdr, c.srv.cfg.MaxBody)
	if err != nil {
		return protocol.Frame{}, nil, err
	}
	return c.readBody(h)
}

// readBody reads the body of the TCP frame whose header is h.
func (c *conn) readBody(h protocol.Header) (protocol.Frame, *[]byte, error) {
	return c.readBodyRest(h, nil)
}

// readBodyRest reads the body of the TCP frame whose header is h, of which
// have (shorter than the body) was read already.
func (c *conn) readBodyRest(h protocol.Header, have []byte) (protocol.Frame, *[]byte, error) {
	f := protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq}
	if h.BodyLen == 0 {
		c.countRead(0)
		return f, nil, nil
	}
	bp := c.srv.bodyPool.Get().(*[]byte)
	f.Body = (*bp)[:h.BodyLen]
	n := copy(f.Body, have)
	if _, err := io.ReadFull(c.nc, f.Body[n:]); err != nil {
		c.srv.bodyPool.Put(bp)
		return protocol.Frame{}, nil, err
	}
	c.countRead(h.BodyLen)
	return f, bp, nil
}

// countRead counts one frame of bodyLen bytes read from the client.
func (c *conn) countRead(bodyLen int) {
	m := c.io()
	m.framesRead.Inc()
	m.bytesRead.Add(float64(protocol.HeaderLen + bodyLen))
}

func (c *conn) readWS() (protocol.Frame, *[]byte, error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return protocol.Frame{}, nil, err
	}
	if mt != websocket.BinaryMessage {
		return protocol.Frame{}, nil, ErrTextFrame
	}
	if _, err := io.ReadFull(r, c.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = protocol.ErrTruncated
		}
		return protocol.Frame{}, nil, err
	}
	h, err := protocol.ParseHeader(c.hdr[:], c.srv.cfg.MaxBody)
	if err != nil {
		return protocol.Frame{}, nil, err
	}
	f := protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq}
	var bp *[]byte
	if h.BodyLen > 0 {
		bp = c.srv.bodyPool.Get().(*[]byte)
		f.Body = (*bp)[:h.BodyLen]
		if _, err := io.ReadFull(r, f.Body); err != nil {
			c.srv.bodyPool.Put(bp)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = protocol.ErrTruncated
			}
			return protocol.Frame{}, nil, err
		}
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		if bp != nil {
			c.srv.bodyPool.Put(bp)
		}
		return protocol.Frame{}, nil, ErrExtraData
	}
	c.countRead(h.BodyLen)
	return f, bp, nil
}

func (c *conn) putBody(bp *[]byte) {
	if bp != nil {
		c.srv.bodyPool.Put(bp)
	}
}

// protocolError closes the connection for a bad frame: DisconnectReply with
// the reason (a WebSocket close frame for WebSocket-level garbage), one log
// line and a metric.
func (c *conn) protocolError(err error) {
	label := errLabel(err)
	if label == "" {
		return
	}
	c.srv.m.protoErrors.WithLabelValues(label).Inc()
	c.srv.log.Info("protocol error; closing", "conn_id", c.id, "transport", c.transportName(), "key", c.key, "err", err)
	if c.ws != nil && (label == "ws_text_frame" || label == "ws_bad_message") {
		msg := websocket.FormatCloseMessage(websocket.CloseUnsupportedData, err.Error())
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsCloseDeadline))
		c.closeWith(nil, false)
		return
	}
	c.closeWith(disconnectFrame(err.Error()), false)
}

func (s *Server) logicCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.baseCtx, s.cfg.LogicTimeout)
}

// handshake runs Auth, registers the connection and starts its read loop in
// a fresh goroutine (small stack while idle), or in this one when inline.
func (s *Server) handshake(c *conn, inline bool) {
	defer s.wg.Done()
	if !s.auth(c) {
		c.wheel.Remove(&c.tm)
		c.closeWith(nil, false)
		if c.lingerIfFlushing() && s.forced.Load() { // as in finish
			c.closeSocket()
		}
		s.readers.Add(-1)
		return
	}
	if c.pollable() && c.startPolled() {
		return // no goroutine while idle
	}
	s.wg.Add(1)
	if inline {
		c.readLoop()
		return
	}
	go c.readLoop()
}

func (s *Server) refuse(c *conn, label, reason string) bool {
	s.m.authFailures.WithLabelValues(label).Inc()
	c.closeWith(disconnectFrame(reason), false)
	return false
}

func (s *Server) auth(c *conn) bool {
	f, bp, err := c.readFrame()
	if err == nil {
		c.gotFrame.Store(true)
	}
	if err != nil {
		if errLabel(err) != "" {
			c.protocolError(err)
		}
		s.m.authFailures.WithLabelValues("read").Inc()
		return false
	}
	if f.Op != protocol.OpAuth {
		c.putBody(bp)
		s.log.Info("first packet is not auth; closing", "conn_id", c.id, "op", f.Op)
		return s.refuse(c, "not_auth", ErrNotAuth.Error())
	}
	if s.draining.Load() {
		c.putBody(bp)
		return s.refuse(c, "draining", ErrDraining.Error())
	}
	ctx, cancel := s.logicCtx()
	reply, err := s.logic.Connect(ctx, &logic.ConnectReq{
		Server:     s.cfg.ID,
		ConnId:     c.id,
		Token:      f.Body,
		RemoteAddr: c.raw.RemoteAddr().String(),
	})
	cancel()
	c.putBody(bp)
	if err != nil {
		reason := status.Convert(err).Message()
		if len(reason) > maxReasonLen {
			reason = reason[:maxReasonLen]
		}
		s.log.Info("auth rejected", "conn_id", c.id, "err", err)
		return s.refuse(c, "rejected", ErrAuthRejected.Error()+": "+reason)
	}
	c.mid = reply.GetMid()
	c.key = reply.GetKey()
	if c.key == "" {
		c.key = c.id
	}
	c.platform = reply.GetPlatform()
	c.setAccepts(reply.GetAccepts())
	hb := time.Duration(reply.GetHeartbeatMs()) * time.Millisecond
	if hb <= 0 {
		hb = s.cfg.HeartbeatInterval
	}
	c.hbTimeout = hb * time.Duration(s.cfg.HeartbeatMissed)
	c.lastLogicHB = time.Now().UnixNano()
	// From here the heartbeat deadline replaces the handshake's. If the
	// handshake expired while logic was answering, the connection is
	// closing: it must not be registered (it would kick a live connection
	// with its key on its way out), only reported to logic (put refuses).
	c.wheel.Set(&c.tm, c.hbTimeout)
	body, _ := json.Marshal(authReply{Mid: c.mid, Key: c.key, RoomID: reply.GetRoomId(), HeartbeatMS: hb.Milliseconds()})
	c.bucket = s.bucketFor(c.key)
	old, err := c.bucket.put(c, reply.GetRoomId(), protocol.AppendFrame(nil, protocol.Version, protocol.OpAuthReply, f.Seq, body))
	if err != nil {
		s.disconnectLogic(c)
		if errors.Is(err, ErrClosed) {
			s.m.authFailures.WithLabelValues("closed").Inc()
			return false
		}
		return s.refuse(c, "draining", err.Error())
	}
	s.conns.Add(1)
	s.ips.add(remoteIP(c.raw))
	c.io().conns.Inc()
	if old != nil {
		old.kick(s.kickDup, protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN, false)
	}
	return true
}

func (c *conn) setAccepts(ops []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.accepts = c.accepts[:0]
	for _, op := range ops {
		c.addAcceptLocked(op)
	}
}

func (c *conn) addAcceptLocked(op int32) {
	for _, a := range c.accepts {
		if a == op {
			return
		}
	}
	if len(c.accepts) < c.srv.cfg.MaxAccepts {
		c.accepts = append(c.accepts, op)
	}
}

func (c *conn) delAcceptLocked(op int32) {
	for i, a := range c.accepts {
		if a == op {
			c.accepts = append(c.accepts[:i], c.accepts[i+1:]...)
			return
		}
	}
}

// parseOps calls fn for each valid op in a comma-separated list; invalid
// items are skipped.
func parseOps(body []byte, fn func(int32)) {
	for _, item := range strings.Split(string(body), ",") {
		op, err := strconv.ParseInt(strings.TrimSpace(item), 10, 32)
		if err == nil {
			fn(int32(op))
		}
	}
}

// readLoop serves an authenticated connection until it closes.
func (c *conn) readLoop() {
	defer c.srv.wg.Done()
	c.blockingLoop()
}

// serveOne reads and handles one frame. For plain WebSocket the reader
// parks in a shallow wait and runs gorilla's (deep) frame reader on a
// deep-stack worker (deepstack.go), so that its own stack stays at 2 KB.
func (c *conn) serveOne() bool {
	if c.ws != nil {
		switch err := c.waitReadable(); {
		case errors.Is(err, errWaitUnsupported):
		case err != nil:
			return false // closed; the read below would say the same
		default:
			return c.srv.deep.run(c, deepReadWS, protocol.Frame{})
		}
	}
	return c.readAndHandle(false)
}

// readAndHandle reads and handles one frame; deep: the caller runs on a
// deep-stack worker, which makes the frame's logic calls itself.
func (c *conn) readAndHandle(deep bool) bool {
	f, bp, err := c.readFrame()
	if err != nil {
		c.protocolError(err)
		return false
	}
	c.handleOn(f, deep)
	c.putBody(bp)
	return true
}

func (c *conn) reply(op, seq int32, body []byte) {
	_ = c.enqueue(protocol.AppendFrame(nil, protocol.Version, op, seq, body))
}

// handle handles one frame on a reader's stack: logic calls go to a
// deep-stack worker.
func (c *conn) handle(f protocol.Frame) { c.handleOn(f, false) }

// handleOn handles one frame; deep: the caller is a deep-stack worker and
// makes logic calls itself. f.Body is only valid until it returns (it
// points into a pooled body buffer or the poller's read buffer): nothing
// may keep it, or hand it to a goroutine that outlives the call.
func (c *conn) handleOn(f protocol.Frame, deep bool) {
	s := c.srv
	switch f.Op {
	case protocol.OpHeartbeat:
		c.wheel.Set(&c.tm, c.hbTimeout)
		var cnt [countBodyLen]byte
		binary.BigEndian.PutUint32(cnt[:], uint32(c.bucket.roomOnline(c)))
		c.reply(protocol.OpHeartbeatReply, f.Seq, cnt[:])
		// Logic renews the session TTL at most once per LogicHeartbeat.
		if now := time.Now().UnixNano(); time.Duration(now-c.lastLogicHB) >= s.cfg.LogicHeartbeat {
			c.lastLogicHB = now
			c.deepCall(deepHeartbeat, f, deep)
		}
	case protocol.OpAuth:
		// Already authenticated: ignored.
	case protocol.OpChangeRoom:
		c.bucket.changeRoom(c, string(f.Body))
		c.reply(protocol.OpChangeRoomReply, f.Seq, f.Body)
	case protocol.OpSub:
		c.mu.Lock()
		parseOps(f.Body, c.addAcceptLocked)
		c.mu.Unlock()
		c.reply(protocol.OpSubReply, f.Seq, f.Body)
	case protocol.OpUnsub:
		c.mu.Lock()
		parseOps(f.Body, c.delAcceptLocked)
		c.mu.Unlock()
		c.reply(protocol.OpUnsubReply, f.Seq, f.Body)
	default:
		c.deepCall(deepReceive, f, deep)
	}
}

// deepCall runs op here when the caller is already a deep-stack worker,
// else on one. A reader calls logic (gRPC, a deep stack) this way so that
// its own stack never grows: Go shrinks a parked goroutine's stack only
// when it uses under a quarter of it, so one deep call would leave every
// idle reader at 4-8 KB instead of 2 KB.
func (c *conn) deepCall(op deepOp, f protocol.Frame, deep bool) {
	if deep {
		c.runDeep(op, f)
		return
	}
	c.srv.deep.run(c, op, f)
}

func (c *conn) logicHeartbeat() {
	s := c.srv
	ctx, cancel := s.logicCtx()
	defer cancel()
	if _, err := s.logic.Heartbeat(ctx, &logic.HeartbeatReq{Mid: c.mid, Key: c.key, Server: s.cfg.ID, ConnId: c.id, Platform: c.platform}); err != nil {
		s.m.logicErrors.WithLabelValues("Heartbeat").Inc()
	}
}

// receive forwards f to logic and sends logic's reply with f's seq.
func (c *conn) receive(f protocol.Frame) {
	s := c.srv
	ctx, cancel := s.logicCtx()
	r, err := s.recv.Receive(ctx, &logic.ReceiveReq{
		Mid: c.mid, Key: c.key, Server: s.cfg.ID, ConnId: c.id,
		Proto: &protocol.Proto{Ver: f.Ver, Op: f.Op, Seq: f.Seq, Body: f.Body},
	})
	cancel()
	if err != nil {
		s.m.logicErrors.WithLabelValues("Receive").Inc()
		if op, body, ok := unavailableReply(f); ok {
			c.reply(op, f.Seq, body)
		}
		return
	}
	if p := r.GetProto(); p != nil {
		c.reply(p.GetOp(), f.Seq, p.GetBody())
	}
}

// reasonLogicDown is the reason of the replies logic could not give.
const reasonLogicDown = "logic unavailable, retry"

// unavailableReply is the reply, with STATUS_UNAVAILABLE, to an IM request
// logic did not answer (unreachable, timed out): the client learns at once
// that nothing was done, instead of waiting out its own timeout. ok is
// false for ops without a reply that carries a status.
func unavailableReply(f protocol.Frame) (op int32, body []byte, ok bool) {
	var m proto.Message
	switch f.Op {
	case protocol.OpMsgSend:
		var req protocol.MsgSend
		_ = proto.Unmarshal(f.Body, &req) // a malformed one still gets its status
		op, m = protocol.OpMsgSendAck, &protocol.MsgSendAck{ClientMsgId: req.GetClientMsgId(), Status: protocol.Status_STATUS_UNAVAILABLE, Reason: reasonLogicDown}
	case protocol.OpSync:
		op, m = protocol.OpSyncReply, &protocol.SyncReply{Status: protocol.Status_STATUS_UNAVAILABLE, Reason: reasonLogicDown}
	case protocol.OpReadMark:
		var req protocol.ReadMark
		_ = proto.Unmarshal(f.Body, &req)
		op, m = protocol.OpReadMarkReply, &protocol.ReadMarkReply{ConvId: req.GetConvId(), ReadSeq: req.GetReadSeq(), Status: protocol.Status_STATUS_UNAVAILABLE, Reason: reasonLogicDown}
	default:
		return 0, nil, false
	}
	body, err := proto.Marshal(m)
	return op, body, err == nil
}

// finish unregisters a closed connection and tells logic.
func (c *conn) finish() {
	s := c.srv
	if c.polled {
		c.unpoll()
	}
	c.wheel.Remove(&c.tm)
	c.closeWith(nil, false)
	// Its timer is gone: a flusher still writing must stay within reach
	// of a forced shutdown (which may already have swept the others).
	if c.lingerIfFlushing() && s.forced.Load() {
		c.closeSocket()
	}
	c.bucket.del(c)
	s.conns.Add(-1)
	s.ips.remove(remoteIP(c.raw))
	c.io().conns.Dec()
	s.disconnectLogic(c)
	s.readers.Add(-1)
}

func (s *Server) disconnectLogic(c *conn) {
	select {
	case s.discSem <- struct{}{}:
	case <-s.baseCtx.Done():
		s.m.logicErrors.WithLabelValues("Disconnect").Inc()
		return
	}
	ctx, cancel := s.logicCtx()
	_, err := s.logic.Disconnect(ctx, &logic.DisconnectReq{Mid: c.mid, Key: c.key, Server: s.cfg.ID, ConnId: c.id})
	cancel()
	<-s.discSem
	if err != nil {
		s.m.logicErrors.WithLabelValues("Disconnect").Inc()
	}
}
