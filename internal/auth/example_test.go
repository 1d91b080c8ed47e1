package auth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hubuim/hubuim/internal/auth"
)

// Logic's use: parse the Auth body comet forwarded, then verify it.
func Example() {
	secret := []byte("an-hs256-secret-of-at-least-32-bytes")
	v, err := auth.New(auth.Config{
		Mode: auth.ModeJWT,
		JWT:  auth.JWTConfig{Secret: string(secret), Audience: "hubuim"},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		panic(err)
	}
	tok, _ := auth.SignHS256(secret, 1001, "hubuim", time.Hour)

	req, err := auth.ParseRequest([]byte(`{"mid":0,"key":"dev-1","token":"` + tok + `"}`))
	if err != nil {
		panic(err)
	}
	req.RemoteAddr = "203.0.113.7:51234"
	id, err := v.Verify(context.Background(), req)
	fmt.Println(id.Mid, err)

	req.Mid = 1002 // claims to be someone else
	_, err = v.Verify(context.Background(), req)
	fmt.Println(errors.Is(err, auth.ErrSubjectMismatch))
	// Output:
	// 1001 <nil>
	// true
}
