// Package store is the durable side of reliable messaging: the message
// timeline (one row per conversation id and seq), the per-user conversation
// index (last seq, read seq, per-device delivered marks) and groups with
// their members.
//
// Two implementations pass the same conformance suite (package storetest):
// Postgres (production, github.com/jackc/pgx/v5) and Bolt (the standalone
// single binary, go.etcd.io/bbolt in a data directory).
//
// Consumers should depend on the smallest interface they need (MessageStore,
// ConvIndex, GroupStore); Store is all of them plus Close.
package store

import (
	"context"
	"errors"

	"github.com/hubuim/hubuim/api/protocol"
)

// Errors returned by every implementation; compare with errors.Is.
var (
	// ErrNotFound: the group, conversation or message does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a group with that id already exists.
	ErrExists = errors.New("store: already exists")
	// ErrSeqConflict: (conv_id, seq) is already taken by another message.
	ErrSeqConflict = errors.New("store: seq already taken by another message")
	// ErrInvalid: the argument is malformed (bad conversation id, seq < 1,
	// missing message id, oversize client message id...). Errors wrapping it
	// say which field is wrong.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrClosed: the store was used after Close.
	ErrClosed = errors.New("store: closed")
)

// Limits on caller-supplied values, enforced by every implementation.
const (
	// MaxClientMsgIDLen bounds Msg.ClientMsgId (bytes).
	MaxClientMsgIDLen = 128
	// MaxDeviceKeyLen bounds the device key of SetDelivered (bytes).
	MaxDeviceKeyLen = 128
	// MaxGroupNameLen bounds Group.Name (bytes).
	MaxGroupNameLen = 256
	// MaxRangeLimit caps the limit of Range; larger limits are lowered.
	MaxRangeLimit = 1000
	// DefaultRangeLimit is used when Range is called with limit <= 0.
	DefaultRangeLimit = 100
	// MaxBatch bounds the number of messages of one AppendBatch call and the
	// number of users of one Touch, AddMembers or RemoveMembers call.
	MaxBatch = 10000
)

// AppendResult is the outcome of appending one message.
type AppendResult struct {
	// Msg is the stored message: the argument itself when it was inserted,
	// the previously stored one when Dup is true. Nil when Err is set.
	Msg *protocol.Msg
	// Dup is true when the message was already stored: same (conv_id, seq)
	// and msg_id, or same (sender, client_msg_id) at any seq.
	Dup bool
	// Err is ErrSeqConflict or an ErrInvalid-wrapping error for this
	// message only.
	Err error
}

// AppendItem is one message of AppendTouch and the users whose conversation
// index it touches.
type AppendItem struct {
	Msg *protocol.Msg
	// Users are touched with Msg's seq (see ConvIndex.Touch) in the same
	// transaction, only when Msg is inserted (not on a dup or conflict).
	// At most MaxBatch users; nil touches nobody.
	Users []int64
}

// MessageStore is the message timeline.
//
// Invariants: at most one message per (conv_id, seq); at most one message per
// (sender, client_msg_id) when client_msg_id is not empty; a stored message
// never changes. Seqs may have gaps (a Redis loss makes the allocator jump).
type MessageStore interface {
	// Append stores m. Appending a message whose (conv_id, seq) is taken by a
	// message with the same msg_id, or whose (sender, client_msg_id) is
	// already stored, returns the stored message and dup=true. A (conv_id,
	// seq) taken by a different msg_id is ErrSeqConflict. m must have a valid
	// conv_id, seq >= 1 and msg_id != 0; the store does not modify m.
	Append(ctx context.Context, m *protocol.Msg) (stored *protocol.Msg, dup bool, err error)
	// AppendBatch appends msgs in one round trip / transaction where the
	// implementation can. Per-message outcomes are in the result (same
	// order as msgs); the error is for failures of the whole call.
	AppendBatch(ctx context.Context, msgs []*protocol.Msg) ([]AppendResult, error)
	// AppendTouch is AppendBatch plus, for each inserted message, a Touch of
	// its item's users with its seq, all in one transaction (one commit).
	// Per-message outcomes are in the result (same order as items): an
	// invalid message or user list fails its item only; the error is for
	// failures of the whole call.
	AppendTouch(ctx context.Context, items []AppendItem) ([]AppendResult, error)
	// Range returns up to limit messages of convID with seq > fromSeq in seq
	// order, and more=true when messages beyond them exist. limit <= 0 means
	// DefaultRangeLimit; limits above MaxRangeLimit are lowered to it.
	Range(ctx context.Context, convID string, fromSeq int64, limit int) (msgs []*protocol.Msg, more bool, err error)
	// MaxSeq returns the highest stored seq of convID, 0 if none.
	MaxSeq(ctx context.Context, convID string) (int64, error)
	// GetByClientID returns the message sent by sender with clientMsgID, or
	// ErrNotFound.
	GetByClientID(ctx context.Context, sender int64, clientMsgID string) (*protocol.Msg, error)
}

// SyncPage is one page of a conversation as a sync of one user reads it.
type SyncPage struct {
	Msgs []*protocol.Msg // Range(convID, fromSeq, limit)
	More bool
	// MaxSeq is MaxSeq(convID).
	MaxSeq int64
	// ReadSeq is the user's read seq of convID, 0 when the user has no
	// index entry for it.
	ReadSeq int64
}

// SyncPager reads a sync page in one call: PostgreSQL sends its three
// queries in one round trip.
type SyncPager interface {
	// SyncPage returns Range(convID, fromSeq, limit), MaxSeq(convID) and
	// userID's read seq of convID.
	SyncPage(ctx context.Context, userID int64, convID string, fromSeq int64, limit int) (SyncPage, error)
}

// ConvState is one conversation as one user sees it.
type ConvState struct {
	ConvID string
	// LastSeq is the higher of the seq last touched for this user and the
	// highest stored seq of the conversation.
	LastSeq int64
	ReadSeq int64 // highest seq the user has read, <= LastSeq
}

// ConvIndex is the per-user conversation index.
//
// A user's entry for a conversation is created by Touch. Its LastSeq also
// follows the message timeline: it is never below the conversation's
// highest stored seq. So a 1:1 message may Touch both users with its seq,
// while a group only needs its members touched once (Touch(members, conv,
// 0) when they join) instead of every member on every message.
//
// Invariants: LastSeq, ReadSeq and delivered marks never decrease; ReadSeq
// never exceeds LastSeq.
type ConvIndex interface {
	// Touch records that convID reached lastSeq for each of userIDs,
	// creating the entries as needed (lastSeq 0 only creates them). A lower
	// lastSeq than the stored one leaves it unchanged.
	Touch(ctx context.Context, userIDs []int64, convID string, lastSeq int64) error
	// SetRead raises the user's read seq of convID to readSeq, capped at the
	// conversation's LastSeq, and returns the resulting read seq. A user
	// without an entry for the conversation gets ErrNotFound.
	SetRead(ctx context.Context, userID int64, convID string, readSeq int64) (int64, error)
	// SetDelivered raises the delivered mark of (userID, deviceKey, convID).
	SetDelivered(ctx context.Context, userID int64, deviceKey, convID string, seq int64) error
	// Delivered returns every delivered mark of one device, by conv id.
	Delivered(ctx context.Context, userID int64, deviceKey string) (map[string]int64, error)
	// Conversation returns one conversation of the user, or ErrNotFound.
	Conversation(ctx context.Context, userID int64, convID string) (ConvState, error)
	// Conversations returns the user's conversations that moved past the
	// given cursors (conv id -> highest seq the client holds): every
	// conversation whose LastSeq is above its cursor, and every conversation
	// without a cursor. A nil map returns all. Ordered by conv id.
	// Read-only changes (ReadSeq moved, LastSeq did not) are not "moved".
	Conversations(ctx context.Context, userID int64, cursors map[string]int64) ([]ConvState, error)
}

// Group is a chat group.
type Group struct {
	ID        int64  // > 0; 0 in CreateGroup means "allocate one"
	Name      string // at most MaxGroupNameLen bytes
	Owner     int64  // user id; becomes a member on creation
	CreatedAt int64  // unix milliseconds; 0 in CreateGroup means now
}

// GroupStore holds groups and their members.
type GroupStore interface {
	// CreateGroup creates g and adds its owner as a member. ErrExists when
	// g.ID is taken.
	CreateGroup(ctx context.Context, g Group) (Group, error)
	// Group returns a group or ErrNotFound.
	Group(ctx context.Context, groupID int64) (Group, error)
	// AddMembers adds users to a group and returns how many were not members
	// yet. ErrNotFound when the group does not exist.
	AddMembers(ctx context.Context, groupID int64, userIDs []int64) (added int, err error)
	// RemoveMembers removes users and returns how many were members.
	// ErrNotFound when the group does not exist.
	RemoveMembers(ctx context.Context, groupID int64, userIDs []int64) (removed int, err error)
	// Members returns the members in ascending user id order. ErrNotFound
	// when the group does not exist.
	Members(ctx context.Context, groupID int64) ([]int64, error)
	// IsMember reports whether userID is a member; false (no error) for a
	// group that does not exist.
	IsMember(ctx context.Context, groupID, userID int64) (bool, error)
	// MemberCount returns the number of members. ErrNotFound when the group
	// does not exist.
	MemberCount(ctx context.Context, groupID int64) (int, error)
	// Groups returns the groups userID is a member of, by ascending id.
	Groups(ctx context.Context, userID int64) ([]Group, error)
}

// Store is a complete message store.
type Store interface {
	MessageStore
	ConvIndex
	SyncPager
	GroupStore
	// Close releases the store; later calls return ErrClosed.
	Close() error
}
