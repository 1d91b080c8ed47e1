package job

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/hubuim/hubuim/api/comet"
	"github.com/hubuim/hubuim/internal/discovery"
)

// LocalClient is a comet.CometClient that calls srv directly: no
// marshalling, no network. It is for a job running in the same process as
// its comet (the standalone mode). Requests are passed by pointer, so srv
// must not keep or modify them after returning (the comet API does not);
// call options are ignored.
func LocalClient(srv comet.CometServer) comet.CometClient { return localClient{srv} }

type localClient struct{ srv comet.CometServer }

func (l localClient) PushMsg(ctx context.Context, in *comet.PushMsgReq, _ ...grpc.CallOption) (*comet.PushMsgReply, error) {
	return l.srv.PushMsg(ctx, in)
}

func (l localClient) PushMsgs(ctx context.Context, in *comet.PushMsgsReq, _ ...grpc.CallOption) (*comet.PushMsgsReply, error) {
	return l.srv.PushMsgs(ctx, in)
}

func (l localClient) Broadcast(ctx context.Context, in *comet.BroadcastReq, _ ...grpc.CallOption) (*comet.BroadcastReply, error) {
	return l.srv.Broadcast(ctx, in)
}

func (l localClient) BroadcastRoom(ctx context.Context, in *comet.BroadcastRoomReq, _ ...grpc.CallOption) (*comet.BroadcastRoomReply, error) {
	return l.srv.BroadcastRoom(ctx, in)
}

func (l localClient) Rooms(ctx context.Context, in *comet.RoomsReq, _ ...grpc.CallOption) (*comet.RoomsReply, error) {
	return l.srv.Rooms(ctx, in)
}

func (l localClient) Kick(ctx context.Context, in *comet.KickReq, _ ...grpc.CallOption) (*comet.KickReply, error) {
	return l.srv.Kick(ctx, in)
}

// LocalDial is a DialFunc for a job sharing its process with the comet
// localID: that comet is called in-process through LocalClient(srv); any
// other comet is dialled with fallback (nil means DialGRPC).
func LocalDial(localID string, srv comet.CometServer, fallback DialFunc) DialFunc {
	if fallback == nil {
		fallback = DialGRPC
	}
	return func(ins discovery.Instance) (comet.CometClient, io.Closer, error) {
		if ins.ID == localID {
			return LocalClient(srv), nil, nil
		}
		return fallback(ins)
	}
}
