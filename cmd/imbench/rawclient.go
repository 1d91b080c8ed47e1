package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubuim/hubuim/api/protocol"
)

// Sizes of a raw connection's buffers: small, since thousands are held.
const (
	rawReadBuf   = 1 << 10
	rawWriteBuf  = 1 << 10
	rawMaxInbody = 1 << 20 // largest inbound body (OpRaw batches may be big)
)

// Errors of the raw client.
var (
	errAuthRejected = errors.New("imbench: auth rejected (connection closed or unexpected reply)")
	errTransport    = errors.New("imbench: unknown transport (want tcp or ws)")
	errStopSplit    = errors.New("imbench: stop splitting") // internal: fn asked to stop
)

// rawConfig is one raw connection's parameters.
type rawConfig struct {
	Addr        string  // host:port
	Transport   string  // "tcp" or "ws"
	WSPath      string  // WebSocket path, e.g. /sub
	LocalIP     net.IP  // source address (nil: chosen by the kernel)
	Mid         int64   // user id sent in Auth
	Key         string  // device key (empty: assigned by the server)
	RoomID      string  // room joined at Auth ("type://id")
	Accepts     []int32 // business ops accepted
	DialTimeout time.Duration
}

// authBody is the Auth (op 7) JSON body.
type authBody struct {
	Mid      int64   `json:"mid"`
	Key      string  `json:"key,omitempty"`
	RoomID   string  `json:"room_id,omitempty"`
	Platform string  `json:"platform,omitempty"`
	Accepts  []int32 `json:"accepts,omitempty"`
}

// authReply is the AuthReply (op 8) JSON body (empty from a goim server).
type authReply struct {
	Mid         int64  `json:"mid"`
	Key         string `json:"key"`
	RoomID      string `json:"room_id"`
	HeartbeatMS int64  `json:"heartbeat_ms"`
}

// rawConn is a minimal client connection: Auth, heartbeats and a read loop,
// no SDK machinery (one goroutine per connection, owned by the caller of
// readLoop).
type rawConn struct {
	conn  net.Conn        // tcp
	ws    *websocket.Conn // ws
	br    *bufio.Reader   // tcp
	hdr   [protocol.HeaderLen]byte
	wmu   sync.Mutex
	wbuf  []byte
	Reply authReply
}

// dialRaw connects and authenticates.
func dialRaw(ctx context.Context, cfg rawConfig) (*rawConn, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{}
	if cfg.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: cfg.LocalIP}
	}
	r := &rawConn{}
	switch cfg.Transport {
	case "", "tcp":
		c, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			return nil, err
		}
		r.conn = c
		r.br = bufio.NewReaderSize(c, rawReadBuf)
	case "ws":
		wd := websocket.Dialer{
			NetDialContext:  d.DialContext,
			ReadBufferSize:  rawReadBuf,
			WriteBufferSize: rawWriteBuf,
		}
		u := url.URL{Scheme: "ws", Host: cfg.Addr, Path: cfg.WSPath}
		ws, resp, err := wd.DialContext(ctx, u.String(), http.Header{})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		r.ws = ws
	default:
		return nil, fmt.Errorf("%w: %q", errTransport, cfg.Transport)
	}
	if err := r.auth(ctx, cfg); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *rawConn) auth(ctx context.Context, cfg rawConfig) error {
	body, err := json.Marshal(authBody{Mid: cfg.Mid, Key: cfg.Key, RoomID: cfg.RoomID, Platform: "imbench", Accepts: cfg.Accepts})
	if err != nil {
		return err
	}
	dl, _ := ctx.Deadline()
	r.setDeadline(dl)
	defer r.setDeadline(time.Time{})
	if err := r.Write(protocol.OpAuth, 1, body); err != nil {
		return err
	}
	var reply protocol.Frame
	err = r.readFrames(func(f protocol.Frame) bool {
		reply = f
		return false
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errAuthRejected, err)
	}
	if reply.Op != protocol.OpAuthReply {
		return fmt.Errorf("%w: op %d %q", errAuthRejected, reply.Op, reply.Body)
	}
	if len(reply.Body) > 0 {
		if err := json.Unmarshal(reply.Body, &r.Reply); err != nil {
			return fmt.Errorf("%w: reply body: %w", errAuthRejected, err)
		}
	}
	return nil
}

func (r *rawConn) setDeadline(t time.Time) {
	if r.conn != nil {
		_ = r.conn.SetDeadline(t)
		return
	}
	_ = r.ws.SetReadDeadline(t)
	_ = r.ws.SetWriteDeadline(t)
}

// Write sends one frame; safe for concurrent use.
func (r *rawConn) Write(op, seq int32, body []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf = protocol.AppendFrame(r.wbuf[:0], protocol.Version, op, seq, body)
	var err error
	if r.conn != nil {
		_, err = r.conn.Write(r.wbuf)
	} else {
		err = r.ws.WriteMessage(websocket.BinaryMessage, r.wbuf)
	}
	if cap(r.wbuf) > rawWriteBuf {
		r.wbuf = nil // do not keep a big buffer per idle connection
	}
	return err
}

// Heartbeat sends a heartbeat (op 2) with a write deadline.
func (r *rawConn) Heartbeat(timeout time.Duration) error {
	if r.conn != nil {
		_ = r.conn.SetWriteDeadline(time.Now().Add(timeout))
	} else {
		_ = r.ws.SetWriteDeadline(time.Now().Add(timeout))
	}
	return r.Write(protocol.OpHeartbeat, 0, nil)
}

// readFrames reads frames and calls fn for each (OpRaw batches over
// WebSocket are split) until fn returns false or reading fails. A frame's
// body is only valid during the call.
func (r *rawConn) readFrames(fn func(protocol.Frame) bool) error {
	if r.conn != nil {
		var buf []byte
		for {
			f, err := protocol.ReadFrame(r.br, &r.hdr, rawMaxInbody, buf)
			if err != nil {
				return err
			}
			if cap(f.Body) <= rawReadBuf {
				buf = f.Body[:0]
			}
			if !fn(f) {
				return nil
			}
		}
	}
	for {
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			return err
		}
		f, _, err := protocol.Unpack(data, rawMaxInbody)
		if err != nil {
			return err
		}
		if f.Op != protocol.OpRaw {
			if !fn(f) {
				return nil
			}
			continue
		}
		err = protocol.SplitRaw(f.Body, rawMaxInbody, func(in protocol.Frame) error {
			if !fn(in) {
				return errStopSplit
			}
			return nil
		})
		if errors.Is(err, errStopSplit) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadLoop reads until the connection fails or is closed; it returns nil
// after Close and io.EOF-like errors otherwise.
func (r *rawConn) ReadLoop(fn func(protocol.Frame)) error {
	err := r.readFrames(func(f protocol.Frame) bool { fn(f); return true })
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// Close closes the connection.
func (r *rawConn) Close() {
	if r.conn != nil {
		_ = r.conn.Close()
		return
	}
	_ = r.ws.Close()
}
