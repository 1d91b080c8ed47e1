//go:build linux

package comet

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollEvents arms a parked connection: one wakeup when it becomes readable
// or the peer hangs up, then disarmed until the reader parks it again.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// pollBatch is how many events one epoll_wait returns at most.
const pollBatch = 128

// stopToken is the epoll token of the poller's stop eventfd; connection
// tokens are their sequence numbers, which start at 1.
const stopToken = 0

// eventfdIncrement is the 8-byte counter increment written to wake the
// poller for a stop.
var eventfdIncrement = [8]byte{1}

// poller watches parked (idle, authenticated, plain-TCP) connections with
// its own epoll instance, separate from the Go runtime's netpoller, which
// keeps serving the connections' writes and blocking reads. A parked
// connection has no goroutine; when it becomes readable the poller starts
// one (conn.pollLoop), which reads and handles frames until the socket has
// nothing more and then parks the connection again.
//
// The epoll data of a connection is its sequence number, never reused, and
// the poller looks the connection up in its map: an event that arrives
// after the connection was unregistered (or its fd number reused) finds
// nothing. epoll_ctl runs inside syscall.RawConn.Control, which holds the
// net package's reference on the fd, so it never acts on a closed (and
// possibly reused) fd number; closing the socket removes it from the epoll
// set.
type poller struct {
	epfd, evfd int

	mu    sync.Mutex
	conns map[uint64]*conn
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.Join(errors.New("comet: epoll_create1"), err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, errors.Join(errors.New("comet: eventfd"), err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setPollToken(&ev, stopToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(evfd)
		_ = unix.Close(epfd)
		return nil, errors.Join(errors.New("comet: epoll_ctl"), err)
	}
	return &poller{epfd: epfd, evfd: evfd, conns: make(map[uint64]*conn)}, nil
}

func setPollToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

func pollToken(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// run dispatches readiness events until stop is called.
func (p *poller) run() {
	var evs [pollBatch]unix.EpollEvent
	for {
		n, err := unix.EpollWait(p.epfd, evs[:], -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // only after close, which follows stop
		}
		for i := range evs[:n] {
			tok := pollToken(&evs[i])
			if tok == stopToken {
				return
			}
			p.mu.Lock()
			c := p.conns[tok]
			p.mu.Unlock()
			if c != nil {
				c.wake()
			}
		}
	}
}

// stop makes run return.
func (p *poller) stop() { _, _ = unix.Write(p.evfd, eventfdIncrement[:]) }

// close releases the epoll instance; call it once run has returned and no
// connection can be parked any more.
func (p *poller) close() {
	_ = unix.Close(p.evfd)
	_ = unix.Close(p.epfd)
}

func (p *poller) add(c *conn) {
	p.mu.Lock()
	p.conns[c.seq] = c
	p.mu.Unlock()
}

// remove unregisters c; rc (may be nil) is its socket, removed from the
// epoll set if it is still open.
func (p *poller) remove(c *conn, rc syscall.RawConn) {
	p.mu.Lock()
	delete(p.conns, c.seq)
	p.mu.Unlock()
	if rc != nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
}

// arm (re-)enables one wakeup for fd, which must be open (called inside
// RawConn.Control).
func (p *poller) arm(fd int, tok uint64) error {
	ev := unix.EpollEvent{Events: pollEvents}
	setPollToken(&ev, tok)
	err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	if errors.Is(err, unix.ENOENT) {
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}
	return err
}

// readNonblock reads into b without waiting: n bytes, or wouldBlock when
// the socket has nothing buffered. n == 0 with no error is EOF.
func readNonblock(fd int, b []byte) (n int, wouldBlock bool, err error) {
	for {
		n, err = unix.Read(fd, b)
		switch {
		case err == nil:
			return n, false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, true, nil
		}
		return 0, false, err
	}
}
