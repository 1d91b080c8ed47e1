package auth

import (
	"context"
	"fmt"
)

// insecureVerifier implements mode "insecure": the claimed mid is trusted.
type insecureVerifier struct{}

func (insecureVerifier) Verify(_ context.Context, req *Request) (Identity, error) {
	if err := req.validate(); err != nil {
		return Identity{}, err
	}
	if req.Mid <= 0 {
		return Identity{}, fmt.Errorf("%w: insecure mode needs a positive mid", ErrBadRequest)
	}
	return Identity{Mid: req.Mid}, nil
}
