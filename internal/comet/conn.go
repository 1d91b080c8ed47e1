package comet

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/comet/timer"
)

// keepQueueCap is the largest outbound queue slice a connection keeps
// between bursts (48 bytes); a bigger one is released so idle connections
// stay small. During a burst the flusher keeps both buffers whatever their
// size (bounded by MaxQueueBytes).
const keepQueueCap = 2

// conn is one client connection. While idle, a plain-TCP connection
// served by the poller (Linux) has no goroutine at all, any other has one
// (the reader); a flusher goroutine exists only while its queue is not
// empty.
//
// Lock order: bucket.mu, then conn.mu. conn.mu is never held during I/O and
// nothing that takes a bucket lock is called with conn.mu held.
type conn struct {
	srv    *Server
	seq    uint64 // unique on this comet (conn_id and poller token)
	id     string // conn_id, unique on this comet
	nc     net.Conn
	raw    net.Conn        // the TCP socket under nc; closing it never blocks
	ws     *websocket.Conn // nil for TCP
	writev bool            // nc is a *net.TCPConn (use writev)
	wheel  *timer.Wheel
	tm     timer.Entry
	hdr    [protocol.HeaderLen]byte

	// Set once by the handshake, read-only afterwards.
	mid         int64
	key         string
	platform    string
	bucket      *bucket
	hbTimeout   time.Duration
	lastLogicHB int64 // unix nanos; the goroutine owning the reads only
	polled      bool  // served by the TCP poller (pollconn.go)

	// Guarded by bucket.mu.
	room         *room
	rprev, rnext *conn

	mu       sync.Mutex
	queue    [][]byte // encoded frames, shared and immutable
	queued   int      // bytes in queue
	accepts  []int32
	flushing bool // a flusher goroutine owns the socket's write side
	// lingering: the reader finished while the flusher was running; the
	// connection is in srv.lingering until the flusher is done.
	lingering bool
	closing   bool // no more frames accepted; close once the queue is written

	closed    atomic.Bool
	gotFrame  atomic.Bool  // a frame was read: any TLS handshake is done
	pollState atomic.Int32 // pollRunning or pollParked
	peerHup   atomic.Bool  // the poller saw a hang-up (pollconn.go)
}

// transportName derives the transport label (not stored: idle connections
// are kept small).
func (c *conn) transportName() string {
	switch {
	case c.ws != nil && c.nc != c.raw:
		return transportWSS
	case c.ws != nil:
		return transportWS
	case c.nc != c.raw:
		return transportTCPTLS
	}
	return transportTCP
}

// io returns the connection's per-transport metrics (no label lookup).
func (c *conn) io() *ioMetrics {
	t := tTCP
	switch {
	case c.ws != nil && c.nc != c.raw:
		t = tWSS
	case c.ws != nil:
		t = tWS
	case c.nc != c.raw:
		t = tTCPTLS
	}
	return &c.srv.m.byTransport[t]
}

// Expire implements timer.Expirer: the handshake or heartbeat deadline
// passed.
func (c *conn) Expire() {
	// Before the first frame a TLS connection may still be in its
	// handshake, where a write would wait for the reader: just close.
	if c.srv.forced.Load() || (!c.gotFrame.Load() && c.nc != c.raw && c.ws == nil) {
		c.closeSocket()
		return
	}
	if c.srv.draining.Load() {
		// Shutdown expires every deadline once all clients are kicked:
		// this reaches the connections still in their handshake.
		c.closeWith(c.srv.drainFrame, false)
		return
	}
	c.srv.m.protoErrors.WithLabelValues("timeout").Inc()
	c.closeWith(c.srv.timeoutFrame, false)
}

// accept reports whether a push with op reaches this connection.
func (c *conn) accept(op int32) bool {
	if protocol.AlwaysAccepted(op) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.accepts {
		if a == op {
			return true
		}
	}
	return false
}

// enqueue queues an encoded frame. It never blocks: when the queue would
// exceed its byte bound the connection is kicked as a slow consumer.
func (c *conn) enqueue(b []byte) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.queued+len(b) > c.srv.cfg.MaxQueueBytes {
		c.mu.Unlock()
		c.srv.m.slowConsumers.Inc()
		c.kick(c.srv.kickSlow, protocol.KickReason_KICK_REASON_SLOW_CONSUMER, true)
		return ErrSlowConsumer
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	start := c.startFlusherLocked()
	c.mu.Unlock()
	if start {
		go c.flushLoop()
	}
	return nil
}

// startFlusherLocked reports whether the caller must start a flusher. The
// WaitGroup is incremented under c.mu: the reader marks the connection
// closing under c.mu before it finishes, so a flusher is never added after
// the connection's own goroutines are done.
func (c *conn) startFlusherLocked() bool {
	if c.flushing {
		return false
	}
	c.flushing = true
	c.srv.wg.Add(1)
	return true
}

func (c *conn) kick(frame []byte, reason protocol.KickReason, replace bool) {
	if c.closeWith(frame, replace) {
		c.srv.m.kicks.WithLabelValues(reasonLabel(reason)).Inc()
	}
}

// closeWith makes frame (may be nil) the last frame the connection gets and
// closes it once written, within KickWriteTimeout. replace discards what
// is still queued (a slow consumer would not read it anyway). It reports
// whether this call started the close.
func (c *conn) closeWith(frame []byte, replace bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	if replace {
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queued = 0
	}
	if frame != nil {
		c.queue = append(c.queue, frame)
		c.queued += len(frame)
	}
	start := c.startFlusherLocked()
	c.mu.Unlock()
	// Also bounds a write the flusher may be blocked in right now.
	_ = c.raw.SetWriteDeadline(time.Now().Add(c.srv.cfg.KickWriteTimeout))
	if start {
		go c.flushLoop()
	}
	return true
}

// lingerIfFlushing is called by the finished reader: while a flusher
// still writes, the server keeps the connection within reach of a forced
// shutdown (closeLingering). It reports whether it did.
func (c *conn) lingerIfFlushing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.flushing {
		return false
	}
	c.lingering = true
	c.srv.linger(c)
	return true
}

// unlingerLocked drops the connection from the server's lingering set
// when its flusher stops. c.mu is held.
func (c *conn) unlingerLocked() {
	if c.lingering {
		c.lingering = false
		c.srv.unlinger(c)
	}
}

func (c *conn) closeSocket() {
	if c.closed.CompareAndSwap(false, true) {
		_ = c.raw.Close()
		// A parked connection has no reader to see the close: start one.
		c.wake()
	}
}

// flushLoop writes everything queued since the last write in one write,
// until the queue is empty.
func (c *conn) flushLoop() {
	defer c.srv.wg.Done()
	// spare double-buffers the queue during a burst without a second
	// slice in the (idle) connection struct.
	var spare [][]byte
	for {
		c.mu.Lock()
		q := c.queue
		if len(q) == 0 {
			c.flushing = false
			c.unlingerLocked()
			closing := c.closing
			switch {
			case cap(q) > keepQueueCap:
				c.queue = nil
			case cap(q) == 0 && cap(spare) <= keepQueueCap:
				c.queue = spare
			}
			c.mu.Unlock()
			if closing {
				c.closeSocket()
			}
			return
		}
		n, closing := c.queued, c.closing
		c.queue, c.queued = spare, 0
		c.mu.Unlock()

		timeout := c.srv.cfg.WriteTimeout
		if closing {
			timeout = c.srv.cfg.KickWriteTimeout
		}
		err := c.write(q, n, time.Now().Add(timeout))
		if err == nil {
			c.io().bytesWritten.Add(float64(n))
		}
		c.srv.m.writes.Inc()
		c.srv.m.framesCoalesce.Add(float64(len(q)))
		clear(q)
		spare = q[:0]
		if err != nil {
			c.mu.Lock()
			c.closing = true
			c.flushing = false
			c.unlingerLocked()
			c.queue, c.queued = nil, 0
			c.mu.Unlock()
			c.srv.m.writeErrors.Inc()
			c.srv.log.Debug("write failed; closing", "conn_id", c.id, "frames", len(q), "err", err)
			c.closeSocket()
			return
		}
	}
}

func isRaw(b []byte) bool {
	return len(b) >= protocol.HeaderLen && int32(binary.BigEndian.Uint32(b[8:12])) == protocol.OpRaw
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// setWriteDeadline sets the write deadline of a batch through set. The
// batch may have been taken before a close (closeWith) shortened the
// deadline to KickWriteTimeout; setting the batch's own deadline after
// that would undo it, so a close seen afterwards shortens it again
// (closeWith marks closing before it sets its deadline: either order
// ends with the short one).
func (c *conn) setWriteDeadline(set func(time.Time) error, deadline time.Time) error {
	if err := set(deadline); err != nil {
		return err
	}
	if c.isClosing() {
		return set(time.Now().Add(c.srv.cfg.KickWriteTimeout))
	}
	return nil
}

// write sends the queued frames q (n bytes) in one write.
func (c *conn) write(q [][]byte, n int, deadline time.Time) error {
	if c.ws != nil {
		return c.writeWS(q, n, deadline)
	}
	if err := c.setWriteDeadline(c.nc.SetWriteDeadline, deadline); err != nil {
		return err
	}
	// On TCP an OpRaw packet is its body: a run of whole packets.
	for i, b := range q {
		if isRaw(b) {
			q[i] = b[protocol.HeaderLen:]
		}
	}
	if len(q) == 1 {
		_, err := c.nc.Write(q[0])
		return err
	}
	if c.writev {
		bufs := net.Buffers(q)
		_, err := bufs.WriteTo(c.nc)
		return err
	}
	bp := c.srv.getWriteBuf(n)
	buf := (*bp)[:0]
	for _, b := range q {
		buf = append(buf, b...)
	}
	_, err := c.nc.Write(buf)
	*bp = buf
	c.srv.putWriteBuf(bp)
	return err
}

// writeWS sends one binary message: the frame itself, or several frames
// packed into one OpRaw frame (PROTOCOL.md). Queued OpRaw frames are
// flattened so that the client never sees a nested OpRaw.
func (c *conn) writeWS(q [][]byte, n int, deadline time.Time) error {
	if err := c.setWriteDeadline(c.ws.SetWriteDeadline, deadline); err != nil {
		return err
	}
	if len(q) == 1 {
		return c.ws.WriteMessage(websocket.BinaryMessage, q[0])
	}
	bp := c.srv.getWriteBuf(n + protocol.HeaderLen)
	buf := (*bp)[:protocol.HeaderLen]
	for _, b := range q {
		if isRaw(b) {
			b = b[protocol.HeaderLen:]
		}
		buf = append(buf, b...)
	}
	protocol.PutHeader(buf, len(buf)-protocol.HeaderLen, protocol.Version, protocol.OpRaw, 0)
	err := c.ws.WriteMessage(websocket.BinaryMessage, buf)
	*bp = buf
	c.srv.putWriteBuf(bp)
	return err
}
