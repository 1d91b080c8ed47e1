package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hubuim/hubuim/api/protocol"
)

const tcpReadBuffer = 4 << 10

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
	// writeFrame writes one encoded frame (or several, on TCP) at once.
	writeFrame(b []byte) error
	setReadDeadline(t time.Time) error
	close() error
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
		c, err := d.DialContext(ctx, "tcp", t.hostport)
		if err != nil {
			return nil, err
		}
		if t.transport == TransportTLS {
			tc := tls.Client(c, tlsConfig(cfg.TLS, t.hostport))
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tc
		}
		return &tcpConn{c: c, r: bufio.NewReaderSize(c, tcpReadBuffer), lim: lim}, nil
	default:
		scheme := "ws"
		if t.transport == TransportWSS {
			scheme = "wss"
		}
		wd := websocket.Dialer{
			NetDialContext:   d.DialContext,
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
		c.SetReadLimit(int64(protocol.HeaderLen + lim.maxIn))
		return &wsConn{c: c, lim: lim}, nil
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
	c   net.Conn
	r   *bufio.Reader
	lim limits
	hdr [protocol.HeaderLen]byte
	buf []byte

	wmu sync.Mutex
}

func (t *tcpConn) readFrame() (protocol.Frame, error) {
	h, err := protocol.ReadHeader(t.r, &t.hdr, t.lim.maxIn)
	if err != nil {
		var fe *protocol.FrameError
		if errors.As(err, &fe) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return protocol.Frame{}, err
	}
	if cap(t.buf) < h.BodyLen {
		t.buf = make([]byte, h.BodyLen)
	}
	body := t.buf[:h.BodyLen]
	if _, err := io.ReadFull(t.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return protocol.Frame{}, err
	}
	return protocol.Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq, Body: body}, nil
}

func (t *tcpConn) writeFrame(b []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if err := t.c.SetWriteDeadline(time.Now().Add(t.lim.writeTimeout)); err != nil {
		return err
	}
	_, err := t.c.Write(b)
	return err
}

func (t *tcpConn) setReadDeadline(d time.Time) error { return t.c.SetReadDeadline(d) }
func (t *tcpConn) close() error                      { return t.c.Close() }

type wsConn struct {
	c   *websocket.Conn
	lim limits
	wmu sync.Mutex
}

func (w *wsConn) readFrame() (protocol.Frame, error) {
	for {
		mt, data, err := w.c.ReadMessage()
		if err != nil {
			return protocol.Frame{}, err
		}
		if mt != websocket.BinaryMessage {
			continue // text or control payloads carry no frames
		}
		f, rest, err := protocol.Unpack(data, w.lim.maxIn)
		if err != nil {
			return protocol.Frame{}, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if len(rest) != 0 {
			return protocol.Frame{}, fmt.Errorf("%w: %d bytes after the frame in one WebSocket message", ErrProtocol, len(rest))
		}
		return f, nil
	}
}

func (w *wsConn) writeFrame(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.c.SetWriteDeadline(time.Now().Add(w.lim.writeTimeout)); err != nil {
		return err
	}
	return w.c.WriteMessage(websocket.BinaryMessage, b)
}

func (w *wsConn) setReadDeadline(d time.Time) error { return w.c.SetReadDeadline(d) }
func (w *wsConn) close() error                      { return w.c.Close() }
