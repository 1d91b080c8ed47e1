package im

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
)

// Ops lists the client operations Handle serves.
var Ops = []int32{protocol.OpMsgSend, protocol.OpMsgDeliveredAck, protocol.OpSync, protocol.OpReadMark}

// Handle serves one client IM packet of user mid on device key and returns
// the reply to send back (same seq), or nil when the op has no reply. A
// malformed body is answered with a BAD_REQUEST status, never an error: the
// connection stays up and nothing is stored.
func (s *Service) Handle(ctx context.Context, mid int64, key string, p *protocol.Proto) (*protocol.Proto, error) {
	var reply proto.Message
	replyOp := int32(0)
	switch p.Op {
	case protocol.OpMsgSend:
		req := &protocol.MsgSend{}
		replyOp = protocol.OpMsgSendAck
		if err := proto.Unmarshal(p.Body, req); err != nil {
			reply = &protocol.MsgSendAck{Status: protocol.Status_STATUS_BAD_REQUEST, Reason: "malformed MsgSend"}
		} else {
			reply = s.Send(ctx, mid, key, req)
		}
	case protocol.OpSync:
		req := &protocol.Sync{}
		replyOp = protocol.OpSyncReply
		if err := proto.Unmarshal(p.Body, req); err != nil {
			reply = &protocol.SyncReply{Status: protocol.Status_STATUS_BAD_REQUEST, Reason: "malformed Sync"}
		} else {
			reply = s.Sync(ctx, mid, req)
		}
	case protocol.OpReadMark:
		req := &protocol.ReadMark{}
		replyOp = protocol.OpReadMarkReply
		if err := proto.Unmarshal(p.Body, req); err != nil {
			reply = &protocol.ReadMarkReply{Status: protocol.Status_STATUS_BAD_REQUEST, Reason: "malformed ReadMark"}
		} else {
			reply = s.ReadMark(ctx, mid, key, req)
		}
	case protocol.OpMsgDeliveredAck:
		req := &protocol.MsgDeliveredAck{}
		if err := proto.Unmarshal(p.Body, req); err != nil {
			return nil, nil // no reply op exists; a bad ack only costs a resync
		}
		if err := s.Delivered(ctx, mid, key, req); err != nil {
			s.statusOf("delivered", err)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("im: op %d is not an IM operation", p.Op)
	}
	body, err := proto.Marshal(reply)
	if err != nil {
		return nil, fmt.Errorf("im: marshal reply: %w", err)
	}
	return &protocol.Proto{Ver: protocol.Version, Op: replyOp, Seq: p.Seq, Body: body}, nil
}
