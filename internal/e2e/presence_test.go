package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/pkg/client"
)

func expectPresence(t *testing.T, c *client.Client, user int64, online bool) {
	t.Helper()
	deadline := time.After(apptest.WaitTimeout)
	for {
		select {
		case ev := <-c.Events():
			if p, ok := ev.(client.Presence); ok && p.User == user && p.Online == online {
				return
			}
		case <-deadline:
			t.Fatalf("mid %d never saw user %d online=%v", c.Mid(), user, online)
		}
	}
}

// A subscriber hears a user's first device come online and its last device
// go offline, and nothing for the devices in between.
func TestPresence(t *testing.T) {
	e := newEnv(t)
	l := e.StartLogic(t)
	a := e.StartComet(t, "comet-a")
	e.StartJob(t)
	watcher := apptest.Dial(t, 5, a.TCP, apptest.Accepts(testOp))

	tok, _ := auth.SignHS256([]byte(apptest.JWTSecret), 5, "", time.Hour)
	req, _ := http.NewRequest(http.MethodPost, "http://"+l.HTTPAddr()+"/im/v1/presence/subscribe", bytes.NewBufferString(`{"users":[6]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"online":false`) {
		t.Fatalf("subscribe: %d %s", resp.StatusCode, body)
	}

	phone := apptest.Dial(t, 6, a.TCP, apptest.Accepts(testOp))
	expectPresence(t, watcher, 6, true)
	web := apptest.Dial(t, 6, a.TCP, apptest.Accepts(testOp)) // a second device: no new event
	phone.Close()
	web.Close()
	expectPresence(t, watcher, 6, false)
}
