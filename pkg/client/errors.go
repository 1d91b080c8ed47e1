package client

import (
	"errors"
	"fmt"

	"github.com/hubuim/hubuim/api/protocol"
)

// Sentinel errors, compared with errors.Is.
var (
	// ErrClosed: the client was closed (or its Run context ended).
	ErrClosed = errors.New("client: closed")
	// ErrAlreadyStarted: Run or Connect was called a second time.
	ErrAlreadyStarted = errors.New("client: already started")
	// ErrDisconnected: the connection a request was sent on is gone
	// before its reply arrived.
	ErrDisconnected = errors.New("client: disconnected")
	// ErrTimeout: a request or send got no reply within its attempts.
	ErrTimeout = errors.New("client: no reply")
	// ErrDeadConnection: nothing arrived within HeartbeatTimeout after a
	// heartbeat; the connection is replaced.
	ErrDeadConnection = errors.New("client: dead connection (heartbeat timeout)")
	// ErrNoAddress: neither the node list nor Addrs gave an address.
	ErrNoAddress = errors.New("client: no address to dial")
	// ErrAuth: the server closed or answered wrongly during Auth.
	ErrAuth = errors.New("client: auth failed")
	// ErrProtocol: the server sent something the protocol forbids.
	ErrProtocol = errors.New("client: protocol error")
	// ErrNodeList: the node list could not be fetched or parsed.
	ErrNodeList = errors.New("client: node list")
	// ErrBadRequest: an argument is invalid.
	ErrBadRequest = errors.New("client: bad request")
	// ErrTooLarge: a body is larger than MaxBody (outbound), or an inbound
	// frame larger than MaxInboundBody was discarded (*OversizeError).
	ErrTooLarge = errors.New("client: body too large")
	// ErrGapUnfilled is reported (as an Error event) when the server keeps
	// announcing seqs that pulls do not return; the client moves past them.
	ErrGapUnfilled = errors.New("client: gap could not be filled")
	// ErrSyncStalled is reported (as an Error event) when a cursor sync
	// reply says more conversations moved (more_convs) but advanced no
	// cursor: the client stops asking; the conversations left out catch
	// up on their next push or notice, or on the next connection.
	ErrSyncStalled = errors.New("client: cursor sync made no progress")
	// ErrDuplicateID: a send with this client message id is in flight.
	ErrDuplicateID = errors.New("client: client message id already in flight")
)

// ConfigError is an invalid Config field.
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string { return "client: config " + e.Field + ": " + e.Msg }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// StatusError is a reply whose status is not STATUS_OK (a MsgSendAck, a
// SyncReply or a ReadMarkReply).
type StatusError struct {
	Op     int32
	Status protocol.Status
	Reason string
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("client: op %d: %v", e.Op, e.Status)
	}
	return fmt.Sprintf("client: op %d: %v: %s", e.Op, e.Status, e.Reason)
}

// Retryable reports whether the same request may succeed later.
func (e *StatusError) Retryable() bool {
	switch e.Status {
	case protocol.Status_STATUS_INTERNAL, protocol.Status_STATUS_UNAVAILABLE, protocol.Status_STATUS_RATE_LIMITED:
		return true
	}
	return false
}

// KickedError is the reason a connection was kicked (op 30). Run returns it
// for the kicks after which reconnecting is pointless (duplicate login and
// admin kicks); for the others the client reconnects.
type KickedError struct {
	Reason  protocol.KickReason
	Message string
}

func (e *KickedError) Error() string {
	return fmt.Sprintf("client: kicked: %v %s", e.Reason, e.Message)
}

// fatal reports whether the client must stop reconnecting after this kick.
func (e *KickedError) fatal() bool {
	return e.Reason == protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN ||
		e.Reason == protocol.KickReason_KICK_REASON_ADMIN
}

// ServerClosedError is a DisconnectReply (op 6): the server closed the
// connection with a reason.
type ServerClosedError struct {
	Reason string
}

func (e *ServerClosedError) Error() string {
	return "client: server closed the connection: " + e.Reason
}
