// Package session is where logic keeps who is connected where: the route of
// a device key (comet id, connection id, user, platform), the devices of a
// user, and each comet's room online counts. Store is the contract; Redis
// (distributed mode) and Memory (standalone mode) implement it and pass the
// same conformance suite in package sessiontest.
//
// Every entry has a TTL renewed by Heartbeat. Removal is conditional on the
// owner (comet id and connection id), so that a late Disconnect of a replaced
// connection never deletes the route of the connection that replaced it.
package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// What a store keeps past a session's end.
const (
	// removedTTL is how long a device route remembers the connection a
	// Remove took it from, so that a Heartbeat of that connection still
	// in flight does not bring the session back (comets call Heartbeat
	// with a timeout of a few seconds).
	removedTTL = 30 * time.Second
	// expiryGrace is how long the device entries of a user whose last
	// device expired are kept for ExpiredUsers (every logic sweeps every
	// few seconds; a sweep after it reports nothing).
	expiryGrace = 5 * time.Minute
)

// ErrUnavailable wraps every error caused by the backing store being
// unreachable or failing. Callers answer it with "try again later".
var ErrUnavailable = errors.New("session: store unavailable")

// ErrInvalid is returned for arguments a Store refuses (empty key or server,
// non-positive TTL).
var ErrInvalid = errors.New("session: invalid argument")

// Session is one connection of one device.
type Session struct {
	Key      string // device key, unique per device
	Mid      int64  // user id
	Server   string // comet id holding the connection
	ConnID   string // connection id, unique on that comet
	Platform string
}

// Owner reports whether s is owned by the same connection as o.
func (s Session) Owner(o Session) bool { return s.Server == o.Server && s.ConnID == o.ConnID }

// Device is one live device of a user.
type Device struct {
	Key      string
	Server   string
	ConnID   string
	Platform string
}

// Store keeps sessions and room online counts. Implementations are safe for
// concurrent use.
type Store interface {
	// Add records s unconditionally (the newest connection of a device
	// wins) with the given TTL, and returns the session it replaced, if
	// the device key was owned by another connection, and whether s is
	// its user's first live device (decided atomically with the write).
	Add(ctx context.Context, s Session, ttl time.Duration) (AddResult, error)

	// Heartbeat renews s for ttl, re-creating whatever expired or was
	// lost (and reports First when that made the user live again, e.g.
	// after ExpiredUsers reported it). It reports Owner false (and
	// changes nothing for the key) when the key is owned by another
	// connection, or was removed from this one (by Remove, within the
	// last 30 s: a Heartbeat that was in flight when its connection
	// closed does not bring the session back).
	Heartbeat(ctx context.Context, s Session, ttl time.Duration) (HeartbeatResult, error)

	// Remove deletes s only where it is still owned by s.Server and
	// s.ConnID, and reports whether the device route was removed and
	// whether s was its user's last live device (decided atomically with
	// the delete of its device entry; an entry that expired and is gone
	// reports nothing).
	Remove(ctx context.Context, s Session) (RemoveResult, error)

	// ExpiredUsers returns up to limit users whose last live device
	// expired without a Remove (its comet died or lost the store), each
	// with that device, and forgets them: a user is reported once across
	// all callers, and not at all once a device of it is live again or
	// after its last device was removed. Entries that expired more than
	// 5 minutes before a call may be gone unreported. more reports that
	// the call stopped at limit candidates (most of which may have needed
	// no report): call again. On error, the users returned are reported
	// nonetheless.
	ExpiredUsers(ctx context.Context, limit int) (users []Expired, more bool, err error)

	// Servers returns the comet id of each key, in the order of keys;
	// "" for keys that are not online.
	Servers(ctx context.Context, keys []string) ([]string, error)

	// Devices returns the live devices of each user (absent users have no
	// entry).
	Devices(ctx context.Context, mids []int64) (map[int64][]Device, error)

	// SetRoomCounts replaces the room online counts of one comet; they
	// vanish after ttl unless set again.
	SetRoomCounts(ctx context.Context, server string, counts map[string]int32, ttl time.Duration) error

	// RoomCounts returns the room counts of every live comet, summed.
	RoomCounts(ctx context.Context) (map[string]int32, error)
}

// AddResult is what Store.Add did.
type AddResult struct {
	// Prev is the session that owned the device key, when Replaced.
	Prev     Session
	Replaced bool
	// First: the user had no live device before (it came online).
	First bool
	// Version orders the user's transitions (First, RemoveResult.Last,
	// Expired): a later one has a greater version. Set with First.
	Version int64
}

// HeartbeatResult is what Store.Heartbeat did.
type HeartbeatResult struct {
	// Owner: the key is the connection's (renewed or re-created).
	Owner bool
	// First: the user had no live device before (the heartbeat brought
	// it back), with the transition's Version (see AddResult.Version).
	First   bool
	Version int64
}

// RemoveResult is what Store.Remove did.
type RemoveResult struct {
	// Removed: the device route was the connection's and is gone.
	Removed bool
	// Last: the connection's device entry was removed and the user has no
	// live device left (it went offline).
	Last bool
	// Version of the transition (see AddResult.Version). Set with Last.
	Version int64
}

// Expired is a user ExpiredUsers reports: the device that expired last,
// and the version of the transition (see AddResult.Version).
type Expired struct {
	Session
	Version int64
}

func checkSession(s Session, ttl time.Duration) error {
	switch {
	case s.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalid)
	case s.Server == "":
		return fmt.Errorf("%w: empty server", ErrInvalid)
	case ttl <= 0:
		return fmt.Errorf("%w: ttl must be positive", ErrInvalid)
	}
	return nil
}
