package comet

import (
	"errors"
	"io"
	"syscall"

	"github.com/hubuim/hubuim/api/protocol"
)

// errPollUnsupported: no TCP poller on this platform (newPoller).
var errPollUnsupported = errors.New("comet: tcp poller needs linux")

// Poll states of a connection (conn.pollState).
const (
	// pollRunning: a goroutine owns the connection's reads (also every
	// connection the poller does not serve).
	pollRunning int32 = iota
	// pollParked: the connection is armed in its poller and has no
	// goroutine; whoever moves it back to pollRunning (the poller on
	// readiness, closeSocket on a close) starts its reader.
	pollParked
)

// pollable reports whether the TCP poller serves c: plain TCP (no TLS, no
// WebSocket) with pollers running.
func (c *conn) pollable() bool {
	return len(c.srv.pollers) > 0 && c.ws == nil && c.nc == c.raw && c.writev
}

func (c *conn) poller() *poller { return c.srv.pollers[c.seq%uint64(len(c.srv.pollers))] }

// wake starts a reader for a parked connection (it became readable, or it
// is being closed and the reader must see that and finish).
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

// pollReads is one reader's state: the callbacks given to syscall.RawConn
// are made once per wakeup, not per frame.
type pollReads struct {
	c          *conn
	rc         syscall.RawConn
	n          int
	wouldBlock bool
	err        error
	readFn     func(uintptr) bool
	armFn      func(uintptr)
}

// read reads the next header (or as much of it as is there) without
// waiting.
func (r *pollReads) read(fd uintptr) bool {
	r.n, r.wouldBlock, r.err = readNonblock(int(fd), r.c.hdr[:])
	return true
}

func (r *pollReads) arm(fd uintptr) { r.err = r.c.poller().arm(int(fd), r.c.seq) }

// pollLoop reads and handles frames of a polled connection while the
// socket has data, then parks it (no goroutine while idle). A frame that
// arrives in pieces is finished with blocking reads: a goroutine exists
// only while a frame is incomplete, and an idle connection holds no
// partial-frame state.
func (c *conn) pollLoop() {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		c.blockingLoop()
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		c.blockingLoop()
		return
	}
	r := &pollReads{c: c, rc: rc}
	r.readFn, r.armFn = r.read, r.arm
	for {
		if err := rc.Read(r.readFn); err != nil || r.err != nil {
			break // closed or reset: not a protocol error
		}
		if r.wouldBlock {
			if c.park(r) {
				return
			}
			// Arming failed (e.g. epoll's watch limit): serve this
			// connection with a blocking reader instead.
			c.blockingLoop()
			return
		}
		if r.n == 0 || !c.serveFrom(r.n) {
			break // EOF, or the connection is closing
		}
	}
	c.finish()
}

// blockingLoop serves the connection with blocking reads until it closes.
func (c *conn) blockingLoop() {
	for c.serveOne() {
	}
	c.finish()
}

// park arms the connection in its poller and gives up ownership. It
// reports false when arming failed and the caller still owns the
// connection.
func (c *conn) park(r *pollReads) bool {
	r.err = nil
	// Parked before armed: the wakeup may come at once. From here on this
	// goroutine touches nothing of c.
	c.pollState.Store(pollParked)
	if err := r.rc.Control(r.armFn); err == nil && r.err == nil {
		return true
	}
	// A close (which wakes the connection itself) or an epoll error:
	// whoever moves the connection out of pollParked owns it.
	return !c.pollState.CompareAndSwap(pollParked, pollRunning)
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
	f, bp, err := c.readBody(h)
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
