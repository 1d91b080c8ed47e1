//go:build linux

package comet

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollEvents: a connection is watched edge-triggered for its whole life;
// every arrival of data (or the hang-up) is one event.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

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
	// ep is epfd as a pollable *os.File: run waits for the epoll set to
	// become readable in the Go runtime's netpoller (a nested epoll), so
	// that no thread blocks in epoll_wait and a wakeup costs what a
	// goroutine's read wakeup costs.
	ep      *os.File
	epRC    syscall.RawConn
	evs     [pollBatch]unix.EpollEvent // run's
	stopped bool                       // run's

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
	p := &poller{epfd: epfd, evfd: evfd, conns: make(map[uint64]*conn)}
	if err := unix.SetNonblock(epfd, true); err != nil {
		p.close()
		return nil, errors.Join(errors.New("comet: epoll nonblock"), err)
	}
	p.ep = os.NewFile(uintptr(epfd), "comet-epoll")
	if p.epRC, err = p.ep.SyscallConn(); err != nil {
		p.close()
		return nil, errors.Join(errors.New("comet: epoll rawconn"), err)
	}
	return p, nil
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
	for !p.stopped {
		if err := p.epRC.Read(p.dispatch); err != nil {
			return // closed: only after stop
		}
	}
}

// dispatch drains the epoll set without blocking; it returns false (wait
// for readability) once the set is empty. The runtime watches epfd
// edge-triggered: every event queued after the last epoll_wait makes it
// readable again.
func (p *poller) dispatch(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), p.evs[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.stopped = true
			return true
		}
		if n == 0 {
			return false
		}
		full := n == len(p.evs)
		for i := range p.evs[:n] {
			tok := pollToken(&p.evs[i])
			if tok == stopToken {
				p.stopped = true
				return true
			}
			p.mu.Lock()
			c := p.conns[tok]
			p.mu.Unlock()
			if c != nil {
				c.notify(p.evs[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
		}
		if !full {
			// Drained: an event from now on makes epfd readable again
			// (a new edge for the runtime's netpoller).
			return false
		}
	}
}

// stop makes run return.
func (p *poller) stop() { _, _ = unix.Write(p.evfd, eventfdIncrement[:]) }

// close releases the epoll instance; call it once run has returned and no
// connection can be parked any more.
func (p *poller) close() {
	_ = unix.Close(p.evfd)
	if p.ep != nil {
		_ = p.ep.Close()
		return
	}
	_ = unix.Close(p.epfd)
}

// add registers c, whose socket is rc.
func (p *poller) add(c *conn, rc syscall.RawConn) error {
	p.mu.Lock()
	p.conns[c.seq] = c
	p.mu.Unlock()
	var err error
	cerr := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: pollEvents}
		setPollToken(&ev, c.seq)
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err = errors.Join(cerr, err); err != nil {
		p.mu.Lock()
		delete(p.conns, c.seq)
		p.mu.Unlock()
	}
	return err
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
