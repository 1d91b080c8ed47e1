package comet

import (
	"bufio"
	"errors"
	"reflect"
	"syscall"
	"unsafe"

	"github.com/gorilla/websocket"
)

// An idle WebSocket reader parked inside gorilla's frame reader keeps a
// 4 KB stack (see docs/comet-benchmarks.md). When gorilla has nothing buffered, the
// reader instead waits for the socket to become readable from a shallow
// frame (peeking one byte), so that its stack stays at 2 KB.
//
// gorilla does not expose how much its read buffer holds, so the offset of
// its unexported *bufio.Reader field is looked up once by reflection; if the
// field is not there (another gorilla version) the shallow wait is off.
var gorillaBROffset = func() uintptr {
	f, ok := reflect.TypeOf(websocket.Conn{}).FieldByName("br")
	if !ok || f.Type != reflect.TypeOf((*bufio.Reader)(nil)) {
		return 0
	}
	return f.Offset
}()

func gorillaBuffered(ws *websocket.Conn) (int, bool) {
	if gorillaBROffset == 0 {
		return 0, false
	}
	br := *(**bufio.Reader)(unsafe.Add(unsafe.Pointer(ws), gorillaBROffset))
	if br == nil {
		return 0, false
	}
	return br.Buffered(), true
}

var errWaitUnsupported = errors.New("comet: shallow wait unsupported")

// waitReadable blocks until the plain-TCP WebSocket connection has data,
// without consuming it, or returns at once when gorilla already buffers
// data. It returns errWaitUnsupported for TLS (tls.Conn buffers too) or an
// unknown gorilla layout.
func (c *conn) waitReadable() error {
	if c.ws == nil || c.nc != c.raw {
		return errWaitUnsupported
	}
	n, ok := gorillaBuffered(c.ws)
	if !ok {
		return errWaitUnsupported
	}
	if n > 0 {
		return nil
	}
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return errWaitUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if errors.Is(e, syscall.EAGAIN) {
			return false // wait for readability, then peek again
		}
		peekErr = e // nil: data (or EOF, which the real read reports)
		return true
	})
	if err != nil {
		return err
	}
	return peekErr
}
