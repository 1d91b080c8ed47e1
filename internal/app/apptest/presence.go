package apptest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/pkg/client"
)

// SubscribePresence subscribes mid to users through the client IM API of
// the logic at httpAddr (a JWT signed with JWTSecret) and returns the
// reply's body (their state); anything but 200 fails tb.
func SubscribePresence(tb testing.TB, httpAddr string, mid int64, users ...int64) string {
	tb.Helper()
	tok, err := auth.SignHS256([]byte(JWTSecret), mid, "", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = fmt.Sprint(u)
	}
	body := `{"users":[` + strings.Join(ids, ",") + `]}`
	req, err := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/im/v1/presence/subscribe", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("presence subscribe of %d: HTTP %d %s", mid, resp.StatusCode, reply)
	}
	return string(reply)
}

// ExpectPresence waits (WaitTimeout) for c to get a presence event of
// user with the given state; other events are skipped.
func ExpectPresence(tb testing.TB, c *client.Client, user int64, online bool) {
	tb.Helper()
	deadline := time.After(WaitTimeout)
	for {
		select {
		case ev := <-c.Events():
			if p, ok := ev.(client.Presence); ok && p.User == user && p.Online == online {
				return
			}
		case <-deadline:
			tb.Fatalf("mid %d never saw user %d online=%v", c.Mid(), user, online)
		}
	}
}
