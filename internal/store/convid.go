package store

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hubuim/hubuim/api/protocol"
)

// Conversation id prefixes.
const (
	singlePrefix = "s:"
	groupPrefix  = "g:"
	// maxConvIDLen is the longest valid conversation id: "s:" and two
	// negative-free int64s separated by ':'.
	maxConvIDLen = len(singlePrefix) + 2*19 + 1
)

// SingleConvID returns the id of the 1:1 conversation between users a and b:
// "s:<min>:<max>", so both sides compute the same id.
func SingleConvID(a, b int64) string {
	if a > b {
		a, b = b, a
	}
	buf := make([]byte, 0, maxConvIDLen)
	buf = append(buf, singlePrefix...)
	buf = strconv.AppendInt(buf, a, 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, b, 10)
	return string(buf)
}

// GroupConvID returns the id of a group's conversation: "g:<groupID>".
func GroupConvID(groupID int64) string {
	return groupPrefix + strconv.FormatInt(groupID, 10)
}

// ConvID is a parsed conversation id.
type ConvID struct {
	Type protocol.ConvType
	// A and B are the two users of a single conversation (A < B); for a group
	// A is the group id and B is 0.
	A, B int64
}

// ParseConvID parses and validates a conversation id produced by
// SingleConvID or GroupConvID. Ids must be canonical (no leading zeros or
// signs, user ids ordered, ids >= 1) so that one conversation has exactly one
// id; anything else is an error wrapping ErrInvalid.
func ParseConvID(s string) (ConvID, error) {
	if len(s) > maxConvIDLen {
		return ConvID{}, fmt.Errorf("%w: conversation id longer than %d bytes", ErrInvalid, maxConvIDLen)
	}
	switch {
	case strings.HasPrefix(s, groupPrefix):
		g, ok := parseID(s[len(groupPrefix):])
		if !ok {
			return ConvID{}, fmt.Errorf("%w: bad group conversation id %q", ErrInvalid, s)
		}
		return ConvID{Type: protocol.ConvType_CONV_TYPE_GROUP, A: g}, nil
	case strings.HasPrefix(s, singlePrefix):
		rest := s[len(singlePrefix):]
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return ConvID{}, fmt.Errorf("%w: bad single conversation id %q", ErrInvalid, s)
		}
		a, okA := parseID(rest[:i])
		b, okB := parseID(rest[i+1:])
		if !okA || !okB || a >= b {
			return ConvID{}, fmt.Errorf("%w: bad single conversation id %q", ErrInvalid, s)
		}
		return ConvID{Type: protocol.ConvType_CONV_TYPE_SINGLE, A: a, B: b}, nil
	}
	return ConvID{}, fmt.Errorf("%w: unknown conversation id %q", ErrInvalid, s)
}

// String returns the canonical id.
func (c ConvID) String() string {
	if c.Type == protocol.ConvType_CONV_TYPE_GROUP {
		return GroupConvID(c.A)
	}
	return SingleConvID(c.A, c.B)
}

// parseID parses a canonical positive decimal int64.
func parseID(s string) (int64, bool) {
	if s == "" || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

// ValidateMsg checks the fields every store relies on.
func ValidateMsg(m *protocol.Msg) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", ErrInvalid)
	}
	c, err := ParseConvID(m.GetConvId())
	if err != nil {
		return err
	}
	if t := m.GetConvType(); t != protocol.ConvType_CONV_TYPE_UNSPECIFIED && t != c.Type {
		return fmt.Errorf("%w: conv_type %s does not match conversation %s", ErrInvalid, t, m.GetConvId())
	}
	if m.GetSeq() < 1 {
		return fmt.Errorf("%w: seq %d < 1", ErrInvalid, m.GetSeq())
	}
	if m.GetMsgId() == 0 {
		return fmt.Errorf("%w: msg_id is 0", ErrInvalid)
	}
	if id := m.GetClientMsgId(); len(id) > MaxClientMsgIDLen || !validText(id) {
		return fmt.Errorf("%w: client_msg_id must be valid UTF-8 without NUL, at most %d bytes", ErrInvalid, MaxClientMsgIDLen)
	}
	return nil
}

// ValidClientMsgID reports whether id can be stored as a client message
// id: 1 to MaxClientMsgIDLen bytes of UTF-8 without NUL.
func ValidClientMsgID(id string) bool {
	return id != "" && len(id) <= MaxClientMsgIDLen && validText(id)
}

// validText reports whether s can be stored as text by every store
// (PostgreSQL text rejects NUL and invalid UTF-8).
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func validConv(convID string) error {
	_, err := ParseConvID(convID)
	return err
}

func validBatch(what string, n int) error {
	if n > MaxBatch {
		return fmt.Errorf("%w: %d %s, more than %d", ErrInvalid, n, what, MaxBatch)
	}
	return nil
}

func rangeLimit(limit int) int {
	if limit <= 0 {
		return DefaultRangeLimit
	}
	return min(limit, MaxRangeLimit)
}

func validDeviceKey(k string) error {
	if k == "" || len(k) > MaxDeviceKeyLen || !validText(k) {
		return fmt.Errorf("%w: device key must be 1..%d bytes of UTF-8 without NUL", ErrInvalid, MaxDeviceKeyLen)
	}
	return nil
}

func validGroupName(n string) error {
	if len(n) > MaxGroupNameLen || !validText(n) {
		return fmt.Errorf("%w: group name must be UTF-8 without NUL, at most %d bytes", ErrInvalid, MaxGroupNameLen)
	}
	return nil
}
