package e2e

import (
	"strings"
	"testing"

	"github.com/hubuim/hubuim/internal/app/apptest"
)

// A subscriber hears a user's first device come online and its last device
// go offline, and nothing for the devices in between.
func TestPresence(t *testing.T) {
	e := newEnv(t)
	l := e.StartLogic(t)
	a := e.StartComet(t, "comet-a")
	e.StartJob(t)
	watcher := apptest.Dial(t, 5, a.TCP, apptest.Accepts(testOp))

	if body := apptest.SubscribePresence(t, l.HTTPAddr(), 5, 6); !strings.Contains(body, `"online":false`) {
		t.Fatalf("subscribe: %s", body)
	}

	phone := apptest.Dial(t, 6, a.TCP, apptest.Accepts(testOp))
	apptest.ExpectPresence(t, watcher, 6, true)
	web := apptest.Dial(t, 6, a.TCP, apptest.Accepts(testOp)) // a second device: no new event
	phone.Close()
	web.Close()
	apptest.ExpectPresence(t, watcher, 6, false)
}
