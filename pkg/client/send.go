package client

import (
	"context"
	"fmt"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"google.golang.org/protobuf/proto"
)

// Conversation is the destination of Send: a user (1:1) or a group.
type Conversation struct {
	Type protocol.ConvType
	ID   int64 // peer user id or group id
}

// User is the 1:1 conversation with user id.
func User(id int64) Conversation {
	return Conversation{Type: protocol.ConvType_CONV_TYPE_SINGLE, ID: id}
}

// Group is the conversation of group id.
func Group(id int64) Conversation {
	return Conversation{Type: protocol.ConvType_CONV_TYPE_GROUP, ID: id}
}

type pendingSend struct {
	msg *protocol.MsgSend
	ch  chan *protocol.MsgSendAck
}

// Send sends one message reliably: it gets a fresh client message id and
// the same MsgSend is resent until its ACK arrives — every SendTimeout, at
// most MaxResends times after the first attempt, and again on the next
// connection when the current one drops (resends caused by a reconnect
// are not counted). The server deduplicates by client message id, so the
// message is stored once. Send returns the ACK once; an ACK whose status is
// not OK comes with a *StatusError. ctx bounds the whole call.
//
// An error other than a *StatusError leaves it unknown whether the message
// was stored; an app that keeps an outbox retries it with SendWithID and
// the same id.
func (c *Client) Send(ctx context.Context, to Conversation, contentType int32, payload []byte) (*protocol.MsgSendAck, error) {
	return c.SendWithID(ctx, c.ids.New(), to, contentType, payload)
}

// NewMsgID returns a fresh client message id (a time-ordered UUIDv7) for
// SendWithID.
func (c *Client) NewMsgID() string { return c.ids.New() }

// SendWithID is Send with a client message id chosen by the app, so that
// a message persisted in an outbox keeps its id across app restarts and
// the server still deduplicates it. Two concurrent SendWithID calls with
// the same id share nothing: the second returns ErrDuplicateID.
func (c *Client) SendWithID(ctx context.Context, clientMsgID string, to Conversation, contentType int32, payload []byte) (*protocol.MsgSendAck, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if clientMsgID == "" {
		return nil, fmt.Errorf("%w: empty client message id", ErrBadRequest)
	}
	ps := &pendingSend{
		msg: &protocol.MsgSend{
			ClientMsgId: clientMsgID, ConvType: to.Type, To: to.ID,
			ContentType: contentType, Payload: payload,
		},
		ch: make(chan *protocol.MsgSendAck, 1),
	}
	body, err := proto.Marshal(ps.msg)
	if err != nil {
		return nil, err
	}
	if len(body) > c.cfg.MaxBody {
		return nil, fmt.Errorf("%w: MsgSend body of %d bytes exceeds MaxBody %d", ErrTooLarge, len(body), c.cfg.MaxBody)
	}
	c.m.inc(mSends)
	id := ps.msg.ClientMsgId
	c.mu.Lock()
	if _, busy := c.sends[id]; busy {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrDuplicateID, id)
	}
	c.sends[id] = ps
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.sends[id] == ps {
			delete(c.sends, id)
		}
		c.mu.Unlock()
	}()

	timer := c.getTimer(c.cfg.SendTimeout)
	defer c.putTimer(timer)
	for attempts := 0; ; {
		select {
		case ack := <-ps.ch:
			if !retryableAck(ack) {
				return ackResult(ack)
			}
		default:
		}
		if attempts > c.cfg.MaxResends {
			return nil, fmt.Errorf("%w: message %s: no ACK after %d attempts", ErrTimeout, id, attempts)
		}
		s, err := c.waitSession(ctx)
		if err != nil {
			return nil, err
		}
		if attempts > 0 {
			c.m.inc(mResends)
		}
		attempts++
		if s.write(protocol.OpMsgSend, c.nextSeq(), body) != nil {
			attempts-- // the connection broke; resend on the next one
			continue
		}
		timer.Reset(c.cfg.SendTimeout)
		select {
		case ack := <-ps.ch:
			if !retryableAck(ack) {
				return ackResult(ack)
			}
			// The server could not take the message now (a dependency
			// failed, or the comet could not reach logic: then it may be
			// stored): send the same client message id again once the
			// send timeout has passed — unless an earlier attempt's final
			// ACK comes first. A stored one is answered with its ACK.
			for waiting := true; waiting; {
				select {
				case ack := <-ps.ch:
					if !retryableAck(ack) {
						return ackResult(ack)
					}
				case <-timer.C:
					waiting = false
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-c.ctx.Done():
					return nil, ErrClosed
				}
			}
		case <-timer.C:
		case <-s.done:
			attempts-- // resend on the next connection
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// retryableAck reports an ACK that refuses the message for now (internal
// error, unavailable, rate limited): Send keeps resending the same id.
func retryableAck(ack *protocol.MsgSendAck) bool {
	return ack.Status != protocol.Status_STATUS_OK &&
		(&StatusError{Status: ack.Status}).Retryable()
}

func ackResult(ack *protocol.MsgSendAck) (*protocol.MsgSendAck, error) {
	if ack.Status != protocol.Status_STATUS_OK {
		return ack, &StatusError{Op: protocol.OpMsgSendAck, Status: ack.Status, Reason: ack.Reason}
	}
	return ack, nil
}

// handleAck completes the Send waiting for the ACK's client message id; a
// second ACK for the same id (answer to a resend) finds nothing and is
// dropped. The sent message is then delivered as a Message event in its
// conversation's order, like any other.
func (c *Client) handleAck(s *session, ack *protocol.MsgSendAck) {
	retry := retryableAck(ack)
	c.mu.Lock()
	ps := c.sends[ack.ClientMsgId]
	if !retry {
		delete(c.sends, ack.ClientMsgId)
	}
	mid := c.mid
	c.mu.Unlock()
	if ps == nil {
		// Send gave up (its ctx ended) before this ACK came: the message
		// is stored all the same and the fan-out skips this device, so it
		// is pulled — unless it is held already (a second ACK, answering
		// a resend).
		if ack.Status == protocol.Status_STATUS_OK && ack.ConvId != "" && ack.Seq > 0 && !c.holds(ack.ConvId, ack.Seq) {
			c.handleNotify(s, &protocol.MsgNotify{ConvId: ack.ConvId, MaxSeq: ack.Seq})
		}
		return
	}
	if retry {
		// Send stays pending and resends; a second refusal before it reads
		// the first changes nothing.
		select {
		case ps.ch <- ack:
		default:
		}
		return
	}
	// ps left the map, so this reader is its last sender: a refusal still
	// in the one-slot buffer (Send did not read it yet, or never will
	// after giving up) is dropped so that the final ACK never blocks the
	// reader.
	select {
	case <-ps.ch:
	default:
	}
	ps.ch <- ack
	if ack.Status != protocol.Status_STATUS_OK || ack.ConvId == "" || ack.Seq <= 0 {
		return
	}
	c.handlePush(s, &protocol.Msg{
		ConvId: ack.ConvId, Seq: ack.Seq, MsgId: ack.MsgId, Sender: mid,
		ClientMsgId: ack.ClientMsgId, ContentType: ps.msg.ContentType,
		Payload: ps.msg.Payload, ServerTime: ack.ServerTime,
		ConvType: ps.msg.ConvType, To: ps.msg.To,
	}, true)
}

// holds reports whether the client has delivered or buffered seq of conv.
func (c *Client) holds(conv string, seq int64) bool {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	st := c.convs[conv]
	if st == nil {
		return false
	}
	_, buffered := st.buf[seq]
	return seq <= st.contig || buffered
}

// getTimer returns a running timer of d from the client's pool (Send is
// called once per message; a timer is two allocations).
func (c *Client) getTimer(d time.Duration) *time.Timer {
	if t, ok := c.timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and returns it to the pool, its channel empty.
func (c *Client) putTimer(t *time.Timer) {
	if !t.Stop() {
		select { // fired and not received (pre-Go 1.23 timer semantics)
		case <-t.C:
		default:
		}
	}
	c.timers.Put(t)
}
