package client

import "github.com/hubuim/hubuim/api/protocol"

// Event is one of Connected, Disconnected, Kicked, Message, Notify,
// ReadMark, Presence, Push and Error. Use a type switch.
type Event interface{ event() }

// Connected: a connection is authenticated. Mid and Key are what the
// server confirmed (Key is the server-assigned one when Config.Key is empty).
type Connected struct {
	Mid    int64
	Key    string
	RoomID string
	Addr   string
}

// Disconnected: the connection ended; the client reconnects unless it was
// closed or fatally kicked.
type Disconnected struct{ Err error }

// Kicked: the server kicked the connection (op 30). It is followed by
// Disconnected.
type Kicked struct {
	Reason  protocol.KickReason
	Message string
}

// Message is a stored IM message, delivered exactly once and in seq order
// per conversation (after dedup and gap filling). The app's own sent
// messages are delivered too, when their ACK arrives.
type Message struct{ *protocol.Msg }

// Notify: the server has messages up to MaxSeq in ConvID (op 26). The
// client pulls them by itself; the event is informational.
type Notify struct {
	ConvID string
	MaxSeq int64
}

// ReadMark is a read mark relayed by the server (op 27): another device of
// this user, or the peer, read ConvID up to ReadSeq.
type ReadMark struct{ *protocol.ReadMark }

// Presence is a presence change of a user (op 29). An event overtaken by
// a later change of the same user (a greater Version: two logics decided
// them a moment apart and they arrived in the other order) is not
// emitted, so the last Presence event of a user is its latest change. The
// state returned by the presence subscribe and status APIs carries no
// version: an event older than such a snapshot can still follow it.
type Presence struct{ *protocol.PresenceEvent }

// Push is any other server push: business ops (>= 1000), room broadcasts,
// and the frames found inside OpRaw batches. Body is owned by the app.
type Push struct {
	Op   int32
	Seq  int32
	Body []byte
}

// Error reports a problem that did not end the connection: an undecodable
// body, an unfillable pull, a failed connection attempt.
type Error struct{ Err error }

func (Connected) event()    {}
func (Disconnected) event() {}
func (Kicked) event()       {}
func (Message) event()      {}
func (Notify) event()       {}
func (ReadMark) event()     {}
func (Presence) event()     {}
func (Push) event()         {}
func (Error) event()        {}
