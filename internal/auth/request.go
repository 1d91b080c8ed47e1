package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Bounds on an Auth body. They keep a hostile client from making logic
// store or forward large values; the frame codec already bounds the body.
const (
	// MaxRequestBytes bounds the whole Auth body.
	MaxRequestBytes = 16 << 10
	// MaxKeyLen bounds the device key, in bytes.
	MaxKeyLen = 128
	// MaxRoomIDLen bounds the room id ("type://id"), in bytes.
	MaxRoomIDLen = 256
	// MaxPlatformLen bounds the platform name, in bytes.
	MaxPlatformLen = 32
	// MaxTokenLen bounds the token, in bytes.
	MaxTokenLen = 8 << 10
	// MaxAccepts bounds the number of accepted ops.
	MaxAccepts = 64
)

// ParseRequest decodes an Auth body. Bad JSON, a negative mid, an over-long
// field, a negative op or too many accepts give an error wrapping
// ErrBadRequest. Unknown JSON fields are ignored for goim compatibility.
func ParseRequest(body []byte) (*Request, error) {
	if len(body) > MaxRequestBytes {
		return nil, fmt.Errorf("%w: body is %d bytes, limit %d", ErrBadRequest, len(body), MaxRequestBytes)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrBadRequest)
	}
	req := new(Request)
	if err := json.Unmarshal(body, req); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadRequest, describeJSONError(err))
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	return req, nil
}

// validate checks the bounds ParseRequest promises. Verifiers call it too,
// because a Request may be built by hand.
func (r *Request) validate() error {
	if r == nil {
		return fmt.Errorf("%w: nil request", ErrBadRequest)
	}
	if r.Mid < 0 {
		return fmt.Errorf("%w: negative mid", ErrBadRequest)
	}
	for _, f := range [...]struct {
		name  string
		value string
		limit int
	}{
		{"key", r.Key, MaxKeyLen},
		{"room_id", r.RoomID, MaxRoomIDLen},
		{"platform", r.Platform, MaxPlatformLen},
		{"token", r.Token, MaxTokenLen},
	} {
		if len(f.value) > f.limit {
			return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrBadRequest, f.name, len(f.value), f.limit)
		}
	}
	if len(r.Accepts) > MaxAccepts {
		return fmt.Errorf("%w: %d accepts, limit %d", ErrBadRequest, len(r.Accepts), MaxAccepts)
	}
	for _, op := range r.Accepts {
		if op < 0 {
			return fmt.Errorf("%w: negative op in accepts", ErrBadRequest)
		}
	}
	return nil
}

// describeJSONError names what is wrong without quoting the input, which
// may contain the token.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		// typ.Value may quote a number from the input; leave it out.
		return fmt.Sprintf("field %q has the wrong type or is out of range for %s", typ.Field, typ.Type)
	default:
		return "malformed JSON"
	}
}
