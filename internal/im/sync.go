package im

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// Sync answers op 24: one conversation from a seq, or every conversation
// that moved past the client's cursors (more_convs set when the reply left
// some out; the client syncs again with its updated cursors).
func (s *Service) Sync(ctx context.Context, user int64, req *protocol.Sync) *protocol.SyncReply {
	var (
		convs []*protocol.ConvMessages
		more  bool
		err   error
	)
	if req.GetConvId() != "" {
		var c *protocol.ConvMessages
		c, err = s.syncConv(ctx, user, req.ConvId, req.FromSeq, int(req.Limit), s.cfg.SyncMaxBytes)
		if err == nil {
			convs = []*protocol.ConvMessages{c}
		}
	} else {
		convs, more, err = s.syncCursors(ctx, user, req.Cursors, req.AfterConvId)
	}
	if err != nil {
		st, reason := s.statusOf("sync", err)
		return &protocol.SyncReply{Status: st, Reason: reason}
	}
	return &protocol.SyncReply{Convs: convs, MoreConvs: more}
}

// syncConv returns one page of convID above from: at most limit messages
// (SyncLimit when out of range) whose payloads fit in maxBytes (at least
// one message).
func (s *Service) syncConv(ctx context.Context, user int64, convID string, from int64, limit, maxBytes int) (*protocol.ConvMessages, error) {
	if err := s.checkAccess(ctx, user, convID); err != nil {
		return nil, err
	}
	if from < 0 {
		return nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "from_seq must not be negative")
	}
	if limit <= 0 || limit > s.cfg.SyncLimit {
		limit = s.cfg.SyncLimit
	}
	// One store call (one round trip on PostgreSQL) for the page, the max
	// seq and the read seq.
	page, err := s.deps.Store.SyncPage(ctx, user, convID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("sync page: %w", err)
	}
	msgs, more := capBytes(page.Msgs, page.More, maxBytes)
	c := &protocol.ConvMessages{ConvId: convID, Msgs: msgs, More: more, MaxSeq: page.MaxSeq, SettledSeq: s.settled(from, msgs), ReadSeq: page.ReadSeq}
	return c, nil
}

// syncCursors returns a first page of the conversations that moved, and
// whether it left some out. 1:1 conversations come from the user's
// conversation index; groups are not indexed per member (a message would
// touch every member), so each of the user's groups is compared with its
// max seq.
//
// A reply holds at most DefaultMaxSyncConvs conversations and SyncMaxBytes
// of payloads (each page is cut to what is left; the client pulls the rest
// of a cut page by conversation). The order is deterministic so that the
// client's next round, with the cursors this one advanced, gets the rest:
// conversations the client sent a cursor for first (they moved while the
// device was away), then those it sent none for (new to the device, or
// left out of its Sync by the frame limit), each by conv id. Those without
// a cursor up to after (the last one an earlier round returned) are left
// out, so that rounds also progress through conversations whose cursors do
// not fit in one Sync.
func (s *Service) syncCursors(ctx context.Context, user int64, cursors []*protocol.Cursor, after string) ([]*protocol.ConvMessages, bool, error) {
	known := make(map[string]int64, len(cursors))
	for _, c := range cursors {
		if c.GetConvId() == "" || c.GetSeq() < 0 {
			return nil, false, errStatus(protocol.Status_STATUS_BAD_REQUEST, "malformed cursor")
		}
		known[c.ConvId] = c.Seq
	}
	var moved []movedConv
	states, err := s.deps.Store.Conversations(ctx, user, known)
	if err != nil {
		return nil, false, fmt.Errorf("conversations: %w", err)
	}
	for _, st := range states {
		if c, err := store.ParseConvID(st.ConvID); err == nil && c.Type == protocol.ConvType_CONV_TYPE_SINGLE {
			if from, ok := known[st.ConvID]; ok || st.ConvID > after {
				moved = append(moved, movedConv{id: st.ConvID, from: from, known: ok})
			}
		}
	}
	groups, err := s.deps.Store.Groups(ctx, user)
	if err != nil {
		return nil, false, fmt.Errorf("groups: %w", err)
	}
	for _, g := range groups {
		convID := store.GroupConvID(g.ID)
		max, err := s.deps.Store.MaxSeq(ctx, convID)
		if err != nil {
			return nil, false, fmt.Errorf("max seq: %w", err)
		}
		if from, ok := known[convID]; max > from && (ok || convID > after) {
			moved = append(moved, movedConv{id: convID, from: from, known: ok})
		}
	}
	slices.SortFunc(moved, func(a, b movedConv) int {
		if a.known != b.known {
			if a.known {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]*protocol.ConvMessages, 0, min(len(moved), DefaultMaxSyncConvs))
	budget := s.cfg.SyncMaxBytes
	for _, m := range moved {
		if len(out) == DefaultMaxSyncConvs || budget <= 0 {
			return out, true, nil // the client syncs again with its new cursors
		}
		c, err := s.syncConv(ctx, user, m.id, m.from, DefaultCursorSyncLimit, budget)
		if err != nil {
			return nil, false, err
		}
		out = append(out, c)
		for _, msg := range c.Msgs {
			budget -= len(msg.Payload)
		}
	}
	return out, false, nil
}

// movedConv is a conversation a cursor sync returns: from is the client's
// cursor (0 without one).
type movedConv struct {
	id    string
	from  int64
	known bool // the client sent a cursor for it
}

// Delivered records the device's highest contiguous seq (op 23).
func (s *Service) Delivered(ctx context.Context, user int64, deviceKey string, req *protocol.MsgDeliveredAck) error {
	if err := s.checkAccess(ctx, user, req.GetConvId()); err != nil {
		return err
	}
	if req.Seq < 0 {
		return errStatus(protocol.Status_STATUS_BAD_REQUEST, "seq must not be negative")
	}
	return s.deps.Store.SetDelivered(ctx, user, deviceKey, req.ConvId, req.Seq)
}

// ReadMark records the user's read seq (op 27) and relays it to the user's
// other devices and to the peer (1:1) or the members (groups, if enabled).
func (s *Service) ReadMark(ctx context.Context, user int64, deviceKey string, req *protocol.ReadMark) *protocol.ReadMarkReply {
	read, users, err := s.readMark(ctx, user, req)
	if err != nil {
		st, reason := s.statusOf("read_mark", err)
		return &protocol.ReadMarkReply{ConvId: req.GetConvId(), Status: st, Reason: reason}
	}
	s.publish(ctx, &logicpb.MsgEvent{
		Kind:      logicpb.MsgEvent_READ_MARK,
		OriginKey: deviceKey,
		ReadMark:  &protocol.ReadMark{ConvId: req.ConvId, ReadSeq: read, User: user},
		Users:     users,
	})
	return &protocol.ReadMarkReply{ConvId: req.ConvId, ReadSeq: read}
}

func (s *Service) readMark(ctx context.Context, user int64, req *protocol.ReadMark) (int64, []int64, error) {
	if err := s.checkAccess(ctx, user, req.GetConvId()); err != nil {
		return 0, nil, err
	}
	if req.ReadSeq < 0 {
		return 0, nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "read_seq must not be negative")
	}
	c, _ := store.ParseConvID(req.ConvId) // checked by checkAccess
	users := []int64{user}
	if c.Type == protocol.ConvType_CONV_TYPE_GROUP {
		// Groups are not in the members' index until they read them.
		max, err := s.deps.Store.MaxSeq(ctx, req.ConvId)
		if err != nil {
			return 0, nil, fmt.Errorf("max seq: %w", err)
		}
		if err := s.deps.Store.Touch(ctx, users, req.ConvId, max); err != nil {
			return 0, nil, fmt.Errorf("touch: %w", err)
		}
		if s.cfg.RelayGroupReadMarks {
			if users, err = s.deps.Store.Members(ctx, c.A); err != nil {
				return 0, nil, fmt.Errorf("members: %w", err)
			}
		}
	} else {
		users = []int64{c.A, c.B}
	}
	read, err := s.deps.Store.SetRead(ctx, user, req.ConvId, req.ReadSeq)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, errStatus(protocol.Status_STATUS_NOT_FOUND, "no messages in the conversation yet")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("set read: %w", err)
	}
	return read, users, nil
}

// settled returns the highest seq up to which every missing seq above from
// will never exist: the highest returned message stored longer ago than the
// settle time (its seq was allocated after every lower seq, whose store
// attempts have all ended by now).
func (s *Service) settled(from int64, msgs []*protocol.Msg) int64 {
	cutoff := s.deps.Now().Add(-s.cfg.SettleTime).UnixMilli()
	settled := from
	for _, m := range msgs {
		if m.ServerTime <= cutoff {
			settled = m.Seq
		}
	}
	return settled
}

// capBytes keeps a prefix of msgs whose payloads fit in maxBytes (at least
// one message) and reports more when it cut.
func capBytes(msgs []*protocol.Msg, more bool, maxBytes int) ([]*protocol.Msg, bool) {
	total := 0
	for i, m := range msgs {
		total += len(m.Payload)
		if total > maxBytes && i > 0 {
			return msgs[:i], true
		}
	}
	return msgs, more
}
