package logic

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// keyBytes is the entropy of a generated device key (22 url-safe chars).
const keyBytes = 16

// newKey returns a random, url-safe device key.
func newKey() string {
	var b [keyBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// authStatus maps a verifier error to a gRPC status with a short reason
// and the metric result. Reasons never carry the request's data.
func authStatus(err error) (result string, st error) {
	switch {
	case errors.Is(err, auth.ErrBadRequest):
		return resultBadRequest, status.Error(codes.InvalidArgument, "bad auth request")
	case errors.Is(err, auth.ErrExpired):
		return resultUnauthorized, status.Error(codes.Unauthenticated, "token expired")
	case errors.Is(err, auth.ErrAudience):
		return resultUnauthorized, status.Error(codes.Unauthenticated, "token audience mismatch")
	case errors.Is(err, auth.ErrInvalidToken):
		return resultUnauthorized, status.Error(codes.Unauthenticated, "invalid token")
	case errors.Is(err, auth.ErrSubjectMismatch):
		return resultDenied, status.Error(codes.PermissionDenied, "token does not match mid")
	case errors.Is(err, auth.ErrDenied):
		return resultDenied, status.Error(codes.PermissionDenied, "denied")
	case errors.Is(err, auth.ErrUnavailable):
		return resultUnavailable, status.Error(codes.Unavailable, "authentication unavailable")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return resultUnavailable, status.FromContextError(err).Err()
	default:
		return resultError, status.Error(codes.Internal, "authentication failed")
	}
}

// storeStatus maps a session store error to a gRPC status.
func storeStatus(err error) (result string, st error) {
	switch {
	case errors.Is(err, session.ErrInvalid):
		return resultBadRequest, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, session.ErrUnavailable):
		return resultUnavailable, status.Error(codes.Unavailable, "session store unavailable")
	default:
		return resultError, status.Error(codes.Internal, "session store error")
	}
}

func connID(server, conn string) error {
	if server == "" || conn == "" {
		return status.Error(codes.InvalidArgument, "server and conn_id are required")
	}
	return nil
}

// Connect authenticates a new connection and records its session.
func (l *Logic) Connect(ctx context.Context, req *pb.ConnectReq) (*pb.ConnectReply, error) {
	if err := connID(req.GetServer(), req.GetConnId()); err != nil {
		l.m.connect.WithLabelValues(resultBadRequest).Inc()
		return nil, err
	}
	ar, err := auth.ParseRequest(req.GetToken())
	if err != nil {
		res, st := authStatus(err)
		l.m.connect.WithLabelValues(res).Inc()
		return nil, st
	}
	ar.RemoteAddr = req.GetRemoteAddr()
	id, err := l.verifier.Verify(ctx, ar)
	if err != nil {
		res, st := authStatus(err)
		l.m.connect.WithLabelValues(res).Inc()
		return nil, st
	}
	key := ar.Key
	if key == "" {
		key = newKey()
	}
	accepts := ar.Accepts
	if len(accepts) == 0 {
		accepts = l.cfg.Conn.Accepts
	}
	s := session.Session{Key: key, Mid: id.Mid, Server: req.GetServer(), ConnID: req.GetConnId(), Platform: ar.Platform}
	added, err := l.store.Add(ctx, s, l.cfg.Conn.SessionTTL)
	if err != nil {
		res, st := storeStatus(err)
		l.m.connect.WithLabelValues(res).Inc()
		return nil, st
	}
	if added.Replaced && l.replaced != nil {
		l.replaced(ctx, added.Prev)
	}
	if added.First && l.userOnline != nil {
		l.userOnline(ctx, s, added.Version)
	}
	l.m.connect.WithLabelValues(resultOK).Inc()
	return &pb.ConnectReply{
		Mid:         id.Mid,
		Key:         key,
		RoomId:      ar.RoomID,
		Accepts:     accepts,
		HeartbeatMs: l.cfg.Conn.Heartbeat.Milliseconds(),
		Platform:    ar.Platform,
	}, nil
}

// Disconnect removes a session if it is still owned by the connection.
func (l *Logic) Disconnect(ctx context.Context, req *pb.DisconnectReq) (*pb.DisconnectReply, error) {
	if err := connID(req.GetServer(), req.GetConnId()); err != nil || req.GetKey() == "" {
		l.m.disconnect.WithLabelValues(resultBadRequest).Inc()
		return nil, status.Error(codes.InvalidArgument, "key, server and conn_id are required")
	}
	gone := session.Session{Key: req.GetKey(), Mid: req.GetMid(), Server: req.GetServer(), ConnID: req.GetConnId()}
	removed, err := l.store.Remove(ctx, gone)
	if err != nil {
		res, st := storeStatus(err)
		l.m.disconnect.WithLabelValues(res).Inc()
		return nil, st
	}
	if removed.Removed {
		l.m.disconnect.WithLabelValues(resultOK).Inc()
	} else {
		l.m.disconnect.WithLabelValues(resultNotOwner).Inc()
	}
	if removed.Last && l.userOffline != nil {
		l.userOffline(ctx, gone, removed.Version)
	}
	return &pb.DisconnectReply{Removed: removed.Removed}, nil
}

// Heartbeat renews a session, re-creating what expired or was lost. A
// connection whose key was taken over by a newer one changes nothing.
func (l *Logic) Heartbeat(ctx context.Context, req *pb.HeartbeatReq) (*pb.HeartbeatReply, error) {
	if err := connID(req.GetServer(), req.GetConnId()); err != nil || req.GetKey() == "" {
		l.m.heartbeat.WithLabelValues(resultBadRequest).Inc()
		return nil, status.Error(codes.InvalidArgument, "key, server and conn_id are required")
	}
	s := session.Session{Key: req.GetKey(), Mid: req.GetMid(), Server: req.GetServer(), ConnID: req.GetConnId(), Platform: req.GetPlatform()}
	beat, err := l.store.Heartbeat(ctx, s, l.cfg.Conn.SessionTTL)
	if err != nil {
		res, st := storeStatus(err)
		l.m.heartbeat.WithLabelValues(res).Inc()
		return nil, st
	}
	if beat.Owner {
		l.m.heartbeat.WithLabelValues(resultOK).Inc()
	} else {
		l.m.heartbeat.WithLabelValues(resultNotOwner).Inc()
	}
	// The session had expired (and was reported offline) or was lost: it
	// is its user's first device again.
	if beat.First && l.userOnline != nil {
		l.userOnline(ctx, s, beat.Version)
	}
	return &pb.HeartbeatReply{}, nil
}

// RenewOnline stores a comet's room counts and returns the cluster-wide
// counts (cached for conn.online_cache).
func (l *Logic) RenewOnline(ctx context.Context, req *pb.OnlineReq) (*pb.OnlineReply, error) {
	if req.GetServer() == "" {
		l.m.renewOnline.WithLabelValues(resultBadRequest).Inc()
		return nil, status.Error(codes.InvalidArgument, "server is required")
	}
	if err := l.store.SetRoomCounts(ctx, req.GetServer(), req.GetRoomCount(), l.cfg.Conn.OnlineTTL); err != nil {
		res, st := storeStatus(err)
		l.m.renewOnline.WithLabelValues(res).Inc()
		return nil, st
	}
	all, err := l.roomCounts(ctx)
	if err != nil {
		res, st := storeStatus(err)
		l.m.renewOnline.WithLabelValues(res).Inc()
		return nil, st
	}
	l.m.renewOnline.WithLabelValues(resultOK).Inc()
	return &pb.OnlineReply{AllRoomCount: all}, nil
}

// Receive passes an upstream packet to the handler of its op. Ops without
// a handler get no reply and are counted.
func (l *Logic) Receive(ctx context.Context, req *pb.ReceiveReq) (*pb.ReceiveReply, error) {
	p := req.GetProto()
	if p == nil {
		l.m.receive.WithLabelValues(resultBadRequest).Inc()
		return nil, status.Error(codes.InvalidArgument, "proto is required")
	}
	h, ok := l.handlers[p.GetOp()]
	if !ok {
		l.m.receive.WithLabelValues(resultUnhandled).Inc()
		return &pb.ReceiveReply{}, nil
	}
	reply, err := h(ctx, req)
	if err != nil {
		l.m.receive.WithLabelValues(resultError).Inc()
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Internal, "receive handler failed")
		}
		return nil, err
	}
	l.m.receive.WithLabelValues(resultHandled).Inc()
	return &pb.ReceiveReply{Proto: reply}, nil
}
