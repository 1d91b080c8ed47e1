package logic

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
)

// authHeader is the HTTP header and gRPC metadata key of the push secret.
const authHeader = "authorization"

const bearerPrefix = "Bearer "

// PushService is the gRPC business push API (api/logic.PushServer). Every
// call needs "authorization: Bearer <push.secret>" in its metadata.
// Concurrent pushes by keys or mids share their store lookups (see
// coalescer).
type PushService struct {
	pb.UnimplementedPushServer
	l *Logic

	lkOnce sync.Once
	lk     *pushLookups
}

func (p *PushService) lookups() *pushLookups {
	p.lkOnce.Do(func() { p.lk = p.l.newPushLookups() })
	return p.lk
}

// checkBearer checks an Authorization value against the push secret.
func (l *Logic) checkBearer(value string) error {
	if l.cfg.Push.Unauthenticated && l.cfg.Push.Secret == "" {
		return nil
	}
	token, ok := strings.CutPrefix(value, bearerPrefix)
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(l.cfg.Push.Secret)) != 1 {
		return ErrUnauthorized
	}
	return nil
}

func (p *PushService) authorize(ctx context.Context, kind string) error {
	var value string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(authHeader); len(v) > 0 {
			value = v[0]
		}
	}
	if err := p.l.checkBearer(value); err != nil {
		p.l.m.push.WithLabelValues(kind, resultUnauthorized).Inc()
		return status.Error(codes.Unauthenticated, "missing or wrong push credential")
	}
	return nil
}

// grpcError maps a core error to a gRPC status.
func grpcError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, "a dependency is unavailable, retry later")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		return status.Error(codes.Internal, "internal error")
	}
}

// PushKeys implements PushServer.
func (p *PushService) PushKeys(ctx context.Context, req *pb.PushKeysReq) (*pb.PushReply, error) {
	if err := p.authorize(ctx, kindKeys); err != nil {
		return nil, err
	}
	if err := p.l.count(kindKeys, p.l.pushKeys(ctx, p.lookups(), req.GetOp(), req.GetKeys(), req.GetMsg())); err != nil {
		return nil, grpcError(err)
	}
	return &pb.PushReply{}, nil
}

// PushMids implements PushServer.
func (p *PushService) PushMids(ctx context.Context, req *pb.PushMidsReq) (*pb.PushReply, error) {
	if err := p.authorize(ctx, kindMids); err != nil {
		return nil, err
	}
	if err := p.l.count(kindMids, p.l.pushMids(ctx, p.lookups(), req.GetOp(), req.GetMids(), req.GetMsg())); err != nil {
		return nil, grpcError(err)
	}
	return &pb.PushReply{}, nil
}

// PushRoom implements PushServer.
func (p *PushService) PushRoom(ctx context.Context, req *pb.PushRoomReq) (*pb.PushReply, error) {
	if err := p.authorize(ctx, kindRoom); err != nil {
		return nil, err
	}
	if err := p.l.PushRoom(ctx, req.GetOp(), req.GetType(), req.GetRoom(), req.GetMsg()); err != nil {
		return nil, grpcError(err)
	}
	return &pb.PushReply{}, nil
}

// PushAll implements PushServer.
func (p *PushService) PushAll(ctx context.Context, req *pb.PushAllReq) (*pb.PushReply, error) {
	if err := p.authorize(ctx, kindAll); err != nil {
		return nil, err
	}
	if err := p.l.PushAll(ctx, req.GetOp(), req.GetSpeed(), req.GetMsg()); err != nil {
		return nil, grpcError(err)
	}
	return &pb.PushReply{}, nil
}

// OnlineTotal implements PushServer.
func (p *PushService) OnlineTotal(ctx context.Context, _ *pb.OnlineTotalReq) (*pb.OnlineTotalReply, error) {
	if err := p.authorize(ctx, "online"); err != nil {
		return nil, err
	}
	ips, conns := p.l.OnlineTotal(ctx)
	return &pb.OnlineTotalReply{IpCount: ips, ConnCount: conns}, nil
}

// OnlineRoom implements PushServer.
func (p *PushService) OnlineRoom(ctx context.Context, req *pb.OnlineRoomReq) (*pb.OnlineRoomReply, error) {
	if err := p.authorize(ctx, "online"); err != nil {
		return nil, err
	}
	rooms, err := p.l.OnlineRoom(ctx, req.GetType(), req.GetRooms())
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.OnlineRoomReply{Rooms: rooms}, nil
}

// OnlineTop implements PushServer.
func (p *PushService) OnlineTop(ctx context.Context, req *pb.OnlineTopReq) (*pb.OnlineTopReply, error) {
	if err := p.authorize(ctx, "online"); err != nil {
		return nil, err
	}
	top, err := p.l.OnlineTop(ctx, req.GetType(), int(req.GetLimit()))
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.OnlineTopReply{Rooms: top}, nil
}

// Nodes implements PushServer. The node list is public (clients call it
// before they have a connection), so it needs no credential.
func (p *PushService) Nodes(_ context.Context, req *pb.NodesReq) (*pb.NodesReply, error) {
	reply, err := p.l.Nodes(req)
	if err != nil {
		return nil, grpcError(err)
	}
	return reply, nil
}
