package im

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// GroupStore is what group management needs from the store.
type GroupStore interface {
	store.GroupStore
}

// Groups manages groups. Its methods take the acting user: 0 means a
// trusted business backend, which may do anything; a user may create
// groups, list the members of groups it is in, add or remove members of
// groups it owns, and leave any group.
type Groups struct {
	store GroupStore
	im    *Service
}

// NewGroups returns group management over st; im serves Sync for the
// business API.
func NewGroups(st GroupStore, im *Service) (*Groups, error) {
	if st == nil || im == nil {
		return nil, errors.New("im: groups need a store and the IM service")
	}
	return &Groups{store: st, im: im}, nil
}

// Actor 0 is a trusted backend.
const trustedActor = 0

// Create creates a group owned by owner with extra members.
func (g *Groups) Create(ctx context.Context, actor int64, id int64, name string, owner int64, members []int64) (*logicpb.GroupInfo, error) {
	if actor != trustedActor {
		owner = actor
		id = 0 // clients never choose ids
	}
	if owner <= 0 {
		return nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "owner must be a positive user id")
	}
	if len(members) > store.MaxBatch {
		return nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "too many members")
	}
	grp, err := g.store.CreateGroup(ctx, store.Group{ID: id, Name: name, Owner: owner})
	if err != nil {
		return nil, storeErr(err)
	}
	if len(members) > 0 {
		_, err := g.store.AddMembers(ctx, grp.ID, members)
		g.im.membersChanged(ctx, grp.ID)
		if err != nil {
			return nil, storeErr(err)
		}
	}
	return g.info(ctx, grp)
}

func (g *Groups) info(ctx context.Context, grp store.Group) (*logicpb.GroupInfo, error) {
	n, err := g.store.MemberCount(ctx, grp.ID)
	if err != nil {
		return nil, storeErr(err)
	}
	return &logicpb.GroupInfo{GroupId: grp.ID, Name: grp.Name, Owner: grp.Owner, CreatedAt: grp.CreatedAt, MemberCount: int32(n)}, nil
}

// AddMembers adds users; only the owner (or a backend) may.
func (g *Groups) AddMembers(ctx context.Context, actor, groupID int64, users []int64) (int, error) {
	if err := g.checkOwner(ctx, actor, groupID); err != nil {
		return 0, err
	}
	n, err := g.store.AddMembers(ctx, groupID, users)
	g.im.membersChanged(ctx, groupID) // even after an error: the change may have been made
	return n, storeErr(err)
}

// RemoveMembers removes users; the owner (or a backend) may remove anyone,
// a member may remove itself (leave). The owner cannot leave its group.
func (g *Groups) RemoveMembers(ctx context.Context, actor, groupID int64, users []int64) (int, error) {
	leaving := actor != trustedActor && len(users) == 1 && users[0] == actor
	if !leaving {
		if err := g.checkOwner(ctx, actor, groupID); err != nil {
			return 0, err
		}
	}
	grp, err := g.store.Group(ctx, groupID)
	if err != nil {
		return 0, storeErr(err)
	}
	for _, u := range users {
		if u == grp.Owner {
			return 0, errStatus(protocol.Status_STATUS_BAD_REQUEST, "the owner cannot be removed")
		}
	}
	n, err := g.store.RemoveMembers(ctx, groupID, users)
	g.im.membersChanged(ctx, groupID) // even after an error: the change may have been made
	return n, storeErr(err)
}

// Members lists the members; a user must be one of them.
func (g *Groups) Members(ctx context.Context, actor, groupID int64) ([]int64, error) {
	if actor != trustedActor {
		if err := g.im.checkMember(ctx, groupID, actor); err != nil {
			return nil, err
		}
	}
	m, err := g.store.Members(ctx, groupID)
	return m, storeErr(err)
}

// UserGroups lists the groups of user.
func (g *Groups) UserGroups(ctx context.Context, user int64) ([]*logicpb.GroupInfo, error) {
	groups, err := g.store.Groups(ctx, user)
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]*logicpb.GroupInfo, 0, len(groups))
	for _, grp := range groups {
		info, err := g.info(ctx, grp)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

func (g *Groups) checkOwner(ctx context.Context, actor, groupID int64) error {
	grp, err := g.store.Group(ctx, groupID)
	if err != nil {
		return storeErr(err)
	}
	if actor != trustedActor && grp.Owner != actor {
		return errStatus(protocol.Status_STATUS_FORBIDDEN, "only the group owner may change its members")
	}
	return nil
}

// storeErr maps store errors to client-visible statuses.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return errStatus(protocol.Status_STATUS_NOT_FOUND, "no such group")
	case errors.Is(err, store.ErrExists):
		return errStatus(protocol.Status_STATUS_BAD_REQUEST, "group id already exists")
	case errors.Is(err, store.ErrInvalid):
		return errStatus(protocol.Status_STATUS_BAD_REQUEST, err.Error())
	}
	return err
}

// GroupsServer serves the Groups gRPC service for business backends.
type GroupsServer struct {
	logicpb.UnimplementedGroupsServer
	g *Groups
}

// NewGroupsServer wraps g.
func NewGroupsServer(g *Groups) *GroupsServer { return &GroupsServer{g: g} }

func (s *GroupsServer) grpcErr(op string, err error) error {
	st, reason := s.g.im.statusOf(op, err)
	code := codes.Internal
	switch st {
	case protocol.Status_STATUS_BAD_REQUEST, protocol.Status_STATUS_TOO_LARGE:
		code = codes.InvalidArgument
	case protocol.Status_STATUS_FORBIDDEN:
		code = codes.PermissionDenied
	case protocol.Status_STATUS_NOT_FOUND:
		code = codes.NotFound
	case protocol.Status_STATUS_UNAVAILABLE:
		code = codes.Unavailable
	}
	return status.Error(code, reason)
}

// CreateGroup implements logicpb.GroupsServer.
func (s *GroupsServer) CreateGroup(ctx context.Context, r *logicpb.CreateGroupReq) (*logicpb.GroupInfo, error) {
	info, err := s.g.Create(ctx, trustedActor, r.GroupId, r.Name, r.Owner, r.Members)
	if err != nil {
		return nil, s.grpcErr("create_group", err)
	}
	return info, nil
}

// AddMembers implements logicpb.GroupsServer.
func (s *GroupsServer) AddMembers(ctx context.Context, r *logicpb.MembersReq) (*logicpb.MembersReply, error) {
	n, err := s.g.AddMembers(ctx, trustedActor, r.GroupId, r.Users)
	if err != nil {
		return nil, s.grpcErr("add_members", err)
	}
	return &logicpb.MembersReply{Changed: int32(n)}, nil
}

// RemoveMembers implements logicpb.GroupsServer.
func (s *GroupsServer) RemoveMembers(ctx context.Context, r *logicpb.MembersReq) (*logicpb.MembersReply, error) {
	n, err := s.g.RemoveMembers(ctx, trustedActor, r.GroupId, r.Users)
	if err != nil {
		return nil, s.grpcErr("remove_members", err)
	}
	return &logicpb.MembersReply{Changed: int32(n)}, nil
}

// Members implements logicpb.GroupsServer.
func (s *GroupsServer) Members(ctx context.Context, r *logicpb.GroupReq) (*logicpb.MemberList, error) {
	m, err := s.g.Members(ctx, trustedActor, r.GroupId)
	if err != nil {
		return nil, s.grpcErr("members", err)
	}
	return &logicpb.MemberList{Users: m}, nil
}

// UserGroups implements logicpb.GroupsServer.
func (s *GroupsServer) UserGroups(ctx context.Context, r *logicpb.UserGroupsReq) (*logicpb.GroupList, error) {
	gs, err := s.g.UserGroups(ctx, r.User)
	if err != nil {
		return nil, s.grpcErr("user_groups", err)
	}
	return &logicpb.GroupList{Groups: gs}, nil
}

// Sync implements logicpb.GroupsServer.
func (s *GroupsServer) Sync(ctx context.Context, r *logicpb.SyncReq) (*protocol.SyncReply, error) {
	if r.User <= 0 || r.Sync == nil {
		return nil, status.Error(codes.InvalidArgument, "user and sync are required")
	}
	return s.g.im.Sync(ctx, r.User, r.Sync), nil
}
