package comet

import "errors"

// Errors of the comet. Connection-level ones become the reason text of a
// DisconnectReply; callers compare with errors.Is.
var (
	ErrClosed        = errors.New("comet: connection closed")
	ErrSlowConsumer  = errors.New("comet: outbound queue full (slow consumer)")
	ErrNotAuth       = errors.New("comet: first packet is not auth")
	ErrAuthRejected  = errors.New("comet: auth rejected")
	ErrDraining      = errors.New("comet: server draining")
	ErrRoomQueueFull = errors.New("comet: room broadcast queue full")
	ErrTextFrame     = errors.New("comet: websocket frame is not binary")
	ErrExtraData     = errors.New("comet: websocket message holds more than one packet")
	ErrStarted       = errors.New("comet: server already started")
	ErrNoLogic       = errors.New("comet: Deps.Logic is required")
)
