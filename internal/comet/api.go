package comet

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cometapi "github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/api/protocol"
)

// api implements the gRPC Comet service.
type api struct {
	cometapi.UnimplementedCometServer
	s *Server
}

// encodeProto encodes p once; the bytes are shared by every recipient.
func encodeProto(p *protocol.Proto) ([]byte, error) {
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "proto is required")
	}
	ver := p.GetVer()
	if ver == 0 {
		ver = protocol.Version
	}
	return protocol.AppendFrame(nil, ver, p.GetOp(), p.GetSeq(), p.GetBody()), nil
}

func (a *api) PushMsg(_ context.Context, req *cometapi.PushMsgReq) (*cometapi.PushMsgReply, error) {
	reply := &cometapi.PushMsgReply{}
	if err := a.push(req, &reply.MissingKeys); err != nil {
		return nil, err
	}
	return reply, nil
}

// PushMsgs applies each push as PushMsg would, in order. An invalid push
// is skipped and its index reported; missing keys are not reported.
func (a *api) PushMsgs(_ context.Context, req *cometapi.PushMsgsReq) (*cometapi.PushMsgsReply, error) {
	reply := &cometapi.PushMsgsReply{}
	for i, p := range req.GetPushes() {
		if a.push(p, nil) != nil {
			reply.Invalid = append(reply.Invalid, int32(i))
		}
	}
	return reply, nil
}

// push queues req's frame to its keys' connections; keys without a
// connection are appended to *missing when missing is not nil.
func (a *api) push(req *cometapi.PushMsgReq, missing *[]string) error {
	frame, err := encodeProto(req.GetProto())
	if err != nil {
		return err
	}
	op := req.GetProtoOp()
	n := 0
	for _, key := range req.GetKeys() {
		c := a.s.bucketFor(key).get(key)
		if c == nil {
			if missing != nil {
				*missing = append(*missing, key)
			}
			continue
		}
		if c.accept(op) && c.enqueue(frame) == nil {
			n++
		}
	}
	a.s.m.pushed.Add(float64(n))
	return nil
}

func (a *api) Broadcast(_ context.Context, req *cometapi.BroadcastReq) (*cometapi.BroadcastReply, error) {
	frame, err := encodeProto(req.GetProto())
	if err != nil {
		return nil, err
	}
	if req.GetSpeed() < 0 {
		return nil, status.Error(codes.InvalidArgument, "speed must not be negative")
	}
	s := a.s
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil, status.Error(codes.Unavailable, ErrDraining.Error())
	}
	s.wg.Add(1)
	s.mu.Unlock()
	if req.GetSpeed() == 0 {
		s.broadcast(req.GetProtoOp(), frame, 0)
		return &cometapi.BroadcastReply{}, nil
	}
	// A paced broadcast may take long: it runs in the background and stops
	// at shutdown.
	go s.broadcast(req.GetProtoOp(), frame, int(req.GetSpeed()))
	return &cometapi.BroadcastReply{}, nil
}

// broadcast writes frame to every connection accepting op, at most speed
// connections per second (0: unlimited). The caller did s.wg.Add(1).
func (s *Server) broadcast(op int32, frame []byte, speed int) {
	defer s.wg.Done()
	var conns []*conn
	for _, b := range s.buckets {
		conns = b.snapshot(conns)
	}
	// Pace in batches of DefaultBroadcastBatchPeriod worth of connections.
	batch := len(conns)
	if speed > 0 {
		batch = max(1, int(int64(speed)*int64(DefaultBroadcastBatchPeriod)/int64(time.Second)))
	}
	start := time.Now()
	n := 0
	for i, c := range conns {
		if i > 0 && i%batch == 0 {
			due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(speed)))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-s.runCtx.Done():
					t.Stop()
					s.m.broadcastMsgs.Add(float64(n))
					return
				}
			}
		}
		if c.accept(op) && c.enqueue(frame) == nil {
			n++
		}
	}
	s.m.broadcastMsgs.Add(float64(n))
}

func (a *api) BroadcastRoom(_ context.Context, req *cometapi.BroadcastRoomReq) (*cometapi.BroadcastRoomReply, error) {
	if req.GetRoomId() == "" {
		return nil, status.Error(codes.InvalidArgument, "room_id is required")
	}
	frame, err := encodeProto(req.GetProto())
	if err != nil {
		return nil, err
	}
	if err := a.s.broadcastRoom(req.GetRoomId(), frame); err != nil {
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	}
	return &cometapi.BroadcastRoomReply{}, nil
}

// broadcastRoom queues frame to the room's worker in every bucket holding
// the room. A bucket whose worker queue is full misses the broadcast (its
// members' loss is counted in room_queue_full); ErrRoomQueueFull is
// returned only when no bucket could queue it. The caller retries on that
// error, which is safe only when nothing was queued: a retry after a
// partial success delivered the frame again to every other bucket, once
// per retry.
func (s *Server) broadcastRoom(id string, frame []byte) error {
	queued, full := 0, 0
	for _, b := range s.buckets {
		if !b.hasRoom(id) {
			continue
		}
		if b.queueRoom(id, frame) != nil {
			s.m.roomQueueFull.Inc()
			full++
			continue
		}
		queued++
	}
	if queued == 0 && full > 0 {
		return ErrRoomQueueFull
	}
	return nil
}

func (a *api) Rooms(context.Context, *cometapi.RoomsReq) (*cometapi.RoomsReply, error) {
	m := make(map[string]int32)
	for _, b := range a.s.buckets {
		b.roomCounts(m)
	}
	return &cometapi.RoomsReply{Rooms: m}, nil
}

func (a *api) Kick(_ context.Context, req *cometapi.KickReq) (*cometapi.KickReply, error) {
	reason := req.GetReason()
	frame := kickFrame(reason, req.GetMessage())
	reply := &cometapi.KickReply{}
	for _, key := range req.GetKeys() {
		c := a.s.bucketFor(key).get(key)
		if c == nil {
			reply.MissingKeys = append(reply.MissingKeys, key)
			continue
		}
		c.kick(frame, reason, false)
	}
	return reply, nil
}
