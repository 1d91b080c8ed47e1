package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hubuim/hubuim/api/protocol"
)

const (
	tcpReadBuffer = 4 << 10
	// maxKeptBody is the largest read buffer a connection keeps between
	// frames; bigger bodies (sync pages, batches) get a buffer of their own
	// so an idle connection does not hold one.
	maxKeptBody = 16 << 10
)

// bodyBuf returns n bytes to read a body into, reusing *keep when it is
// big enough and keeping new buffers up to maxKeptBody.
func bodyBuf(keep *[]byte, n int) []byte {
	if cap(*keep) >= n {
		return (*keep)[:n]
	}
	b := make([]byte, n)
	if n <= maxKeptBody {
		*keep = b
	}
	return b
}

// target is one dialable address.
type target struct {
	transport string
	hostport  string
	path      string // WebSocket path
}

func (t target) String() string {
	if t.transport == TransportWS || t.transport == TransportWSS {
		return t.transport + "://" + t.hostport + t.path
	}
	return t.transport + "://" + t.hostport
}

// parseAddr accepts "host:port" (dialed with transport) or
// "scheme://host:port[/path]".
func parseAddr(addr, transport, wsPath string) (target, error) {
	if addr == "" {
		return target{}, errors.New("empty address")
	}
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return target{}, fmt.Errorf("address %q: %w", addr, err)
		}
		return target{transport: transport, hostport: addr, path: wsPath}, nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		return target{}, fmt.Errorf("address %q: %w", addr, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if !validTransport(scheme) {
		return target{}, fmt.Errorf("address %q: scheme %q is not one of tcp, tls, ws, wss", addr, u.Scheme)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return target{}, fmt.Errorf("address %q: %w", addr, err)
	}
	path := u.Path
	if path == "" {
		path = wsPath
	}
	return target{transport: scheme, hostport: u.Host, path: path}, nil
}

// frameConn is one connection to a comet, framed. readFrame is called by
// one goroutine only; writeFrame may be called concurrently.
type frameConn interface {
	// readFrame returns the next frame; its body is valid until the next
	// call.
	readFrame() (protocol.Frame, error)
	// writeFrame encodes one frame into the connection's write buffer
	// and writes it.
	writeFrame(op, seq int32, body []byte) error
	setReadDeadline(t time.Time) error
	close() error
	// received counts the bytes read from the network so far, so that a
	// big frame arriving slowly still shows the connection is alive.
	received() int64
}

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type limits struct {
	maxIn        int // MaxInboundBody
	writeTimeout time.Duration
}

func dial(ctx context.Context, t target, cfg *Config) (frameConn, error) {
	lim := limits{maxIn: cfg.MaxInboundBody, writeTimeout: cfg.WriteTimeout}
	d := &net.Dialer{Timeout: cfg.DialTimeout}
	switch t.transport {
	case TransportTCP, TransportTLS:
		raw, err := d.DialContext(ctx, "tcp", t.hostport)
		if err != nil {
			return nil, err
		}
		tc := &tcpConn{lim: lim}
		var c net.Conn = countingConn{Conn: raw, n: &tc.rx}
		if t.transport == TransportTLS {
			tlsConn := tls.Client(c, tlsConfig(cfg.TLS, t.hostport))
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, err
			}
			c = tlsConn
		}
		tc.c, tc.r = c, bufio.NewReaderSize(c, tcpReadBuffer)
		return tc, nil
	default:
		scheme := "ws"
		if t.transport == TransportWSS {
			scheme = "wss"
		}
		wc := &wsConn{lim: lim}
		wd := websocket.Dialer{
			NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				raw, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: raw, n: &wc.rx}, nil
			},
			HandshakeTimeout: cfg.DialTimeout,
			TLSClientConfig:  tlsConfig(cfg.TLS, t.hostport),
		}
		u := url.URL{Scheme: scheme, Host: t.hostport, Path: t.path}
		c, resp, err := wd.DialContext(ctx, u.String(), http.Header{})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		wc.c = c
		return wc, nil
	}
}

func tlsConfig(base *tls.Config, hostport string) *tls.Config {
	var c *tls.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			c.ServerName = host
		}
	}
	return c
}

type tcpConn struct {
	rx  atomic.Int64
	c   net.Conn
	r   *bufio.Reader
	lim limits
	hdr [protocol.HeaderLen]byte
	buf []byte

	wmu  sync.Mutex
	wbuf []byte // encoded outbound frame, reused under wmu
}

func (t *tcpConn) readFrame() (protocol.Frame, error) {
	if _, err := io.ReadFull(t.r, t.hdr[:]); err != nil {
		return protocol.Frame{}, err
	}
	h, err := parseInboundHeader(t.hdr[:])
	if err != nil {
		return protocol.Frame{}, err
	}
	if h.BodyLen > t.lim.maxIn {
		if _, err := io.CopyN(io.Discard, t.r, int64(h.BodyLen)); err != nil {
			return protocol.Frame{}, err
		}
		return protocol.Frame{}, &OversizeError{Op: h.Op, Seq: h.Seq, Size: h.BodyLen, Limit: t.lim.maxIn}
	}
	body := bodyBuf(&t.buf, h.BodyLen)
	if _, err := io.ReadFull(t.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return protocol.Frame{}, err
	}
	return protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq, Body: body}, nil
}

func (t *tcpConn) writeFrame(op, seq int32, body []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if err := t.c.SetWriteDeadline(time.Now().Add(t.lim.writeTimeout)); err != nil {
		return err
	}
	b := protocol.AppendFrame(t.wbuf[:0], protocol.Version, op, seq, body)
	_, err := t.c.Write(b)
	keepWriteBuf(&t.wbuf, b)
	return err
}

// keepWriteBuf keeps b as the connection's write buffer unless it grew
// past maxKeptBody (a rare big request), so an idle connection holds at
// most that much.
func keepWriteBuf(keep *[]byte, b []byte) {
	if cap(b) <= maxKeptBody {
		*keep = b[:0]
	}
}

func (t *tcpConn) setReadDeadline(d time.Time) error { return t.c.SetReadDeadline(d) }
func (t *tcpConn) received() int64                   { return t.rx.Load() }
func (t *tcpConn) close() error                      { return t.c.Close() }

type wsConn struct {
	rx   atomic.Int64
	c    *websocket.Conn
	lim  limits
	hdr  [protocol.HeaderLen]byte
	buf  []byte
	wmu  sync.Mutex
	wbuf []byte // encoded outbound frame, reused under wmu
}

// readFrame streams one WebSocket message: the header is checked before
// the body is read, so an oversized message is discarded, not buffered.
func (w *wsConn) readFrame() (protocol.Frame, error) {
	for {
		mt, r, err := w.c.NextReader()
		if err != nil {
			return protocol.Frame{}, err
		}
		if mt != websocket.BinaryMessage {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return protocol.Frame{}, err
			}
			continue // text payloads carry no frames
		}
		if _, err := io.ReadFull(r, w.hdr[:]); err != nil {
			return protocol.Frame{}, fmt.Errorf("%w: WebSocket message shorter than a header: %w", ErrProtocol, err)
		}
		h, err := parseInboundHeader(w.hdr[:])
		if err != nil {
			return protocol.Frame{}, err
		}
		if h.BodyLen > w.lim.maxIn {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return protocol.Frame{}, err
			}
			return protocol.Frame{}, &OversizeError{Op: h.Op, Seq: h.Seq, Size: h.BodyLen, Limit: w.lim.maxIn}
		}
		body := bodyBuf(&w.buf, h.BodyLen)
		if _, err := io.ReadFull(r, body); err != nil {
			return protocol.Frame{}, fmt.Errorf("%w: truncated WebSocket message: %w", ErrProtocol, err)
		}
		if n, err := io.Copy(io.Discard, r); err != nil || n != 0 {
			return protocol.Frame{}, fmt.Errorf("%w: %d bytes after the frame in one WebSocket message", ErrProtocol, n)
		}
		return protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq, Body: body}, nil
	}
}

// maxClaimedBody is the largest body a header may claim before it is a
// protocol error; bodies between MaxInboundBody and this are discarded.
const maxClaimedBody = math.MaxInt32 - protocol.HeaderLen

func parseInboundHeader(b []byte) (protocol.Header, error) {
	h, err := protocol.ParseHeader(b, maxClaimedBody)
	if err != nil {
		return h, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return h, nil
}

// OversizeError is an inbound frame larger than MaxInboundBody. Its body
// was read and discarded; the connection goes on. An oversized SyncReply
// is retried with a smaller page.
type OversizeError struct {
	Op, Seq int32
	Size    int
	Limit   int
}

func (e *OversizeError) Error() string {
	return fmt.Sprintf("client: op %d seq %d: body of %d bytes exceeds MaxInboundBody %d; discarded", e.Op, e.Seq, e.Size, e.Limit)
}

func (e *OversizeError) Unwrap() error { return ErrTooLarge }

func (w *wsConn) writeFrame(op, seq int32, body []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.c.SetWriteDeadline(time.Now().Add(w.lim.writeTimeout)); err != nil {
		return err
	}
	b := protocol.AppendFrame(w.wbuf[:0], protocol.Version, op, seq, body)
	err := w.c.WriteMessage(websocket.BinaryMessage, b)
	keepWriteBuf(&w.wbuf, b)
	return err
}

func (w *wsConn) setReadDeadline(d time.Time) error { return w.c.SetReadDeadline(d) }
func (w *wsConn) received() int64                   { return w.rx.Load() }
func (w *wsConn) close() error                      { return w.c.Close() }
