package comet

import (
	"errors"
	"io"
	"syscall"

	"github.com/hubuim/hubuim/api/protocol"
)

// errPollUnsupported: no TCP poller on this platform (newPoller).
var errPollUnsupported = errors.New("comet: tcp poller needs linux")

// Poll states of a connection (conn.pollState). The poller watches a
// connection edge-triggered for its whole life; the state decides who
// reads.
const (
	// pollRunning: a goroutine owns the connection's reads (also every
	// connection the poller does not serve).
	pollRunning int32 = iota
	// pollParked: no goroutine; whoever moves the connection back to
	// pollRunning (the poller on an event, closeSocket on a close) starts
	// its reader.
	pollParked
	// pollNotified: running, and an event came since: data may have
	// arrived after the reader's last read, so it must read again before
	// parking.
	pollNotified
)

// pollable reports whether the TCP poller serves c: plain TCP (no TLS, no
// WebSocket) with pollers running.
func (c *conn) pollable() bool {
	return len(c.srv.pollers) > 0 && c.ws == nil && c.nc == c.raw && c.writev
}

func (c *conn) poller() *poller { return c.srv.pollers[c.seq%uint64(len(c.srv.pollers))] }

// startPolled registers c with its poller and serves it (on the calling
// goroutine until it has nothing to read). It reports false, having done
// nothing, when c cannot be polled (the caller then starts a reader).
func (c *conn) startPolled() bool {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	c.polled = true
	if err := c.poller().add(c, rc); err != nil {
		c.polled = false
		return false
	}
	c.pollLoop()
	return true
}

// notify is the poller's event for c: readable, or hung up (hup: the
// peer closed its side or the socket failed; a read returns EOF or the
// error once the data before it is read).
func (c *conn) notify(hup bool) {
	if hup {
		c.peerHup.Store(true)
	}
	for {
		switch st := c.pollState.Load(); st {
		case pollParked:
			if c.pollState.CompareAndSwap(st, pollRunning) {
				c.srv.m.pollWakeups.Inc()
				c.srv.wg.Add(1)
				go c.pollReader()
				return
			}
		case pollRunning:
			if c.pollState.CompareAndSwap(st, pollNotified) {
				return
			}
		default:
			return
		}
	}
}

// wake starts a reader for a parked connection that is being closed: it
// has no reader to see the close and finish.
func (c *conn) wake() {
	if c.pollState.CompareAndSwap(pollParked, pollRunning) {
		c.srv.wg.Add(1)
		go c.pollReader()
	}
}

func (c *conn) pollReader() {
	defer c.srv.wg.Done()
	c.pollLoop()
}

// pollReadBuf is how much a polled connection's reader reads at once.
// Every complete frame in it is served from it, so a wakeup that brings
// one small frame costs one read syscall (the header, the body and a read
// finding nothing more were three). Pooled with the reader's state:
// an idle connection holds none.
const pollReadBuf = 4096

// pollReads is a reader's state for one wakeup. Pooled, with its RawConn
// callback and read buffer made once: a wakeup allocates only the RawConn.
type pollReads struct {
	c          *conn
	n          int
	wouldBlock bool
	err        error
	readFn     func(uintptr) bool
	buf        []byte
}

func newPollReads() any {
	r := &pollReads{buf: make([]byte, pollReadBuf)}
	r.readFn = r.read
	return r
}

// read reads what the socket holds, up to the buffer, without waiting.
func (r *pollReads) read(fd uintptr) bool {
	r.n, r.wouldBlock, r.err = readNonblock(int(fd), r.buf)
	return true
}

// pollLoop reads and handles frames of a polled connection while the
// socket has data, then parks it (no goroutine while idle). A frame that
// arrives in pieces is finished with blocking reads: a goroutine exists
// only while a frame is incomplete, and an idle connection holds no
// partial-frame state.
func (c *conn) pollLoop() {
	rc, err := c.raw.(syscall.Conn).SyscallConn() // pollable: a *net.TCPConn
	if err != nil {
		c.finish()
		return
	}
	r := c.srv.pollReadsPool.Get().(*pollReads)
	r.c = c
	defer func() {
		*r = pollReads{readFn: r.readFn, buf: r.buf}
		c.srv.pollReadsPool.Put(r)
	}()
	for {
		if err := rc.Read(r.readFn); err != nil || r.err != nil {
			break // closed or reset: not a protocol error
		}
		if r.wouldBlock {
			if c.park() {
				return
			}
			continue
		}
		if r.n == 0 || !c.serveBuffered(r.buf[:r.n]) {
			break // EOF, or the connection is closing
		}
		// A short read emptied the socket: park without the read that
		// would find nothing. Data that came since raised an event
		// (edge-triggered: every arrival does), so park fails and the
		// loop reads again. A frame arriving microseconds after the reply
		// (loopback ping-pong) now needs a poller wake-up instead
		// (BenchmarkTCPRoundTrip pingpong ~15 % slower); a client across
		// a network sends long after the reader parked either way.
		// Not after a hang-up: its event came already, and the EOF is
		// only seen by another read.
		if r.n < len(r.buf) && !c.peerHup.Load() && c.park() {
			return
		}
	}
	c.finish()
}

// park gives up the reads after a read found nothing. It reports false
// when the caller must read again: an event came since (the data may have
// arrived after that read) or the connection was closed meanwhile.
func (c *conn) park() bool {
	if !c.pollState.CompareAndSwap(pollRunning, pollParked) {
		c.pollState.Store(pollRunning) // was pollNotified
		return false
	}
	// From here on a new reader may own c. closeSocket sets closed before
	// it wakes a parked connection: if its wake came before the park, it
	// found nothing to wake, and this takes the connection back.
	if c.closed.Load() && c.pollState.CompareAndSwap(pollParked, pollRunning) {
		return false
	}
	return true
}

// blockingLoop serves the connection with blocking reads until it closes.
func (c *conn) blockingLoop() {
	for c.serveOne() {
	}
	c.finish()
}

// serveBuffered serves the frames in b, read from the socket; b is the
// reader's buffer, which the frames' bodies point into while they are
// handled (handle keeps no body). A frame cut at b's end is finished with
// blocking reads.
func (c *conn) serveBuffered(b []byte) bool {
	for len(b) > 0 {
		if len(b) < protocol.HeaderLen {
			return c.serveFrom(copy(c.hdr[:], b))
		}
		h, err := protocol.ParseHeader(b[:protocol.HeaderLen], c.srv.cfg.MaxBody)
		if err != nil {
			c.protocolError(err)
			return false
		}
		b = b[protocol.HeaderLen:]
		if len(b) < h.BodyLen {
			return c.serveBody(h, b)
		}
		f := protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq}
		if h.BodyLen > 0 {
			f.Body = b[:h.BodyLen:h.BodyLen]
		}
		b = b[h.BodyLen:]
		c.countRead(h.BodyLen)
		c.handle(f)
	}
	return true
}

// serveFrom completes the header of which n bytes were read, reads the
// body and handles the frame.
func (c *conn) serveFrom(n int) bool {
	if n < protocol.HeaderLen {
		if _, err := io.ReadFull(c.nc, c.hdr[n:]); err != nil {
			c.protocolError(err)
			return false
		}
	}
	h, err := protocol.ParseHeader(c.hdr[:], c.srv.cfg.MaxBody)
	if err != nil {
		c.protocolError(err)
		return false
	}
	return c.serveBody(h, nil)
}

// serveBody reads the body of the frame whose header is h, of which have
// was read already, and handles the frame.
func (c *conn) serveBody(h protocol.Header, have []byte) bool {
	f, bp, err := c.readBodyRest(h, have)
	if err != nil {
		c.protocolError(err)
		return false
	}
	c.handle(f)
	c.putBody(bp)
	return true
}

// unpoll removes a finished polled connection from its poller.
func (c *conn) unpoll() {
	var rc syscall.RawConn
	if sc, ok := c.raw.(syscall.Conn); ok {
		rc, _ = sc.SyscallConn()
	}
	c.poller().remove(c, rc)
}
