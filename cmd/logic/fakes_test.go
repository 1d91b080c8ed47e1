package main

import (
	"context"

	"github.com/hubuim/hubuim/internal/auth"
)

type fakeVerifier struct{}

func (fakeVerifier) Verify(context.Context, *auth.Request) (auth.Identity, error) {
	return auth.Identity{}, auth.ErrDenied
}

type nopProducer struct{}

func (nopProducer) Publish(context.Context, string, []byte, []byte) error { return nil }
func (nopProducer) Close() error                                          { return nil }
