package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"google.golang.org/protobuf/proto"
)

// Request sends one frame with a fresh seq and returns the frame the server
// answers with the same seq. It is sent once: when the connection drops
// first, it fails with ErrDisconnected; without a reply within SendTimeout
// (or ctx), with ErrTimeout (or ctx.Err()); a reply larger than
// MaxInboundBody, with its *OversizeError (errors.Is ErrTooLarge). Use it for business ops that
// have a reply; pushes never match a request.
func (c *Client) Request(ctx context.Context, op int32, body []byte) (protocol.Frame, error) {
	if len(body) > c.cfg.MaxBody {
		return protocol.Frame{}, fmt.Errorf("%w: %d bytes exceeds MaxBody %d", ErrTooLarge, len(body), c.cfg.MaxBody)
	}
	s, err := c.waitSession(ctx)
	if err != nil {
		return protocol.Frame{}, err
	}
	seq := c.nextSeq()
	ch := s.register(seq)
	defer s.unregister(seq)
	if err := s.write(op, seq, body); err != nil {
		return protocol.Frame{}, errors.Join(ErrDisconnected, err)
	}
	t := time.NewTimer(c.cfg.SendTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-t.C:
		return protocol.Frame{}, fmt.Errorf("%w: op %d seq %d", ErrTimeout, op, seq)
	case <-s.done:
		return protocol.Frame{}, sessionErr(s)
	case <-ctx.Done():
		return protocol.Frame{}, ctx.Err()
	case <-c.ctx.Done():
		return protocol.Frame{}, ErrClosed
	}
}

// requestIdempotent retries Request on timeouts and disconnects, up to
// MaxResends times, for operations that may safely be repeated.
func (c *Client) requestIdempotent(ctx context.Context, op, replyOp int32, body []byte) (protocol.Frame, error) {
	var lastErr error
	for attempt := 0; attempt <= c.cfg.MaxResends; attempt++ {
		f, err := c.Request(ctx, op, body)
		if err == nil {
			if f.Op != replyOp {
				return f, fmt.Errorf("%w: op %d answered with op %d", ErrProtocol, op, f.Op)
			}
			return f, nil
		}
		if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrDisconnected) {
			return f, err
		}
		lastErr = err
	}
	return protocol.Frame{}, lastErr
}

// ReadMark tells the server (and through it the user's other devices and
// the peer) that convID was read up to seq.
func (c *Client) ReadMark(ctx context.Context, convID string, seq int64) error {
	body, err := proto.Marshal(&protocol.ReadMark{ConvId: convID, ReadSeq: seq})
	if err != nil {
		return err
	}
	f, err := c.requestIdempotent(ctx, protocol.OpReadMark, protocol.OpReadMarkReply, body)
	if err != nil {
		return err
	}
	var r protocol.ReadMarkReply
	if err := proto.Unmarshal(f.Body, &r); err != nil {
		return fmt.Errorf("%w: ReadMarkReply: %w", ErrProtocol, err)
	}
	if r.Status != protocol.Status_STATUS_OK {
		return &StatusError{Op: protocol.OpReadMarkReply, Status: r.Status, Reason: r.Reason}
	}
	return nil
}

// ChangeRoom moves the connection to room ("type://id"; empty leaves the
// current room). The room is kept for reconnects.
func (c *Client) ChangeRoom(ctx context.Context, room string) error {
	if _, err := c.requestIdempotent(ctx, protocol.OpChangeRoom, protocol.OpChangeRoomReply, []byte(room)); err != nil {
		return err
	}
	c.mu.Lock()
	c.roomID = room
	c.mu.Unlock()
	return nil
}

// Sub adds business ops to the ones this connection accepts; they are kept
// for reconnects.
func (c *Client) Sub(ctx context.Context, ops ...int32) error {
	if _, err := c.requestIdempotent(ctx, protocol.OpSub, protocol.OpSubReply, joinOps(ops)); err != nil {
		return err
	}
	c.mu.Lock()
	for _, op := range ops {
		if !containsOp(c.accepts, op) {
			c.accepts = append(c.accepts, op)
		}
	}
	c.mu.Unlock()
	return nil
}

// Unsub removes business ops from the ones this connection accepts.
func (c *Client) Unsub(ctx context.Context, ops ...int32) error {
	if _, err := c.requestIdempotent(ctx, protocol.OpUnsub, protocol.OpUnsubReply, joinOps(ops)); err != nil {
		return err
	}
	c.mu.Lock()
	kept := c.accepts[:0]
	for _, op := range c.accepts {
		if !containsOp(ops, op) {
			kept = append(kept, op)
		}
	}
	c.accepts = kept
	c.mu.Unlock()
	return nil
}

func joinOps(ops []int32) []byte {
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = strconv.FormatInt(int64(op), 10)
	}
	return []byte(strings.Join(parts, ","))
}

func containsOp(ops []int32, op int32) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}
