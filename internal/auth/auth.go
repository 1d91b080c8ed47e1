// Package auth decides who a new connection is. Comet forwards the raw Auth
// body (PROTOCOL.md op 7) to logic; logic parses it with ParseRequest and asks
// a Verifier built by New from a Config. Three modes exist:
//
//   - "jwt": the Auth body's token is a JSON Web Token signed with HS256 (a
//     shared secret), RS256 or ES256 (public keys from PEM files or a JSON Web
//     Key Set file that is re-read when it changes). Algorithms are an
//     explicit allow-list derived from the configured keys, "none" is never
//     accepted, and a key only ever verifies the algorithm family it belongs
//     to. exp and nbf are checked with a leeway, aud and iss when configured.
//     The user id comes from a claim ("sub" by default, string or number); it
//     must equal the claimed mid, or becomes the mid when the client sent 0.
//   - "webhook": the request is POSTed as JSON to the business backend, which
//     answers {"allow":bool,"mid":int64,"reason":string}. 401/403 or
//     allow=false deny the connection; network errors, timeouts and any other
//     status make the verifier unavailable, which is not the client's fault.
//   - "insecure": the mid in the Auth body is trusted as long as it is
//     positive. For development only; New logs a warning.
//
// Every failure wraps one of the sentinel errors below, to be tested with
// errors.Is. Error strings never contain the token, the key or another
// user's data, so they are safe to log.
package auth

import (
	"context"
	"errors"
	"time"
)

// Request is a parsed Auth body plus connection facts.
type Request struct {
	Mid        int64   `json:"mid"`
	Key        string  `json:"key"`
	RoomID     string  `json:"room_id"`
	Platform   string  `json:"platform"`
	Accepts    []int32 `json:"accepts"`
	Token      string  `json:"token"`
	RemoteAddr string  `json:"-"`
}

// Identity is who the verifier says the connection is.
type Identity struct {
	Mid       int64
	ExpiresAt time.Time // zero when the credential does not expire
}

// Verifier checks a Request. It must be safe for concurrent use.
type Verifier interface {
	Verify(ctx context.Context, req *Request) (Identity, error)
}

// Sentinel errors. Every error returned by this package wraps exactly one of
// them.
var (
	// ErrBadRequest: the Auth body is malformed or out of bounds.
	ErrBadRequest = errors.New("auth: bad request")
	// ErrInvalidToken: missing, malformed or badly signed token, a
	// disallowed algorithm, an unknown key or a wrong issuer.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrExpired: the token is past exp or before nbf (beyond the leeway).
	ErrExpired = errors.New("auth: token expired or not yet valid")
	// ErrAudience: the token is meant for another audience.
	ErrAudience = errors.New("auth: wrong token audience")
	// ErrSubjectMismatch: the credential belongs to another user than the
	// claimed mid.
	ErrSubjectMismatch = errors.New("auth: subject does not match mid")
	// ErrDenied: the webhook said no (401/403, allow=false or no user id).
	ErrDenied = errors.New("auth: denied")
	// ErrUnavailable: the verifier could not reach a decision (webhook down,
	// timeout, 5xx, unreadable answer). The client may retry later.
	ErrUnavailable = errors.New("auth: verifier unavailable")
)

// DeniedError carries the webhook's reason for a denial. It wraps ErrDenied.
// The reason is not part of Error() because it is free text written by
// another system; log or forward it deliberately.
type DeniedError struct {
	Reason string
}

func (e *DeniedError) Error() string { return ErrDenied.Error() }
func (e *DeniedError) Unwrap() error { return ErrDenied }
