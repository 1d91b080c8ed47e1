package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/pkg/client"
)

// pushHTTP calls a goim push endpoint of a logic with the push secret.
func pushHTTP(t *testing.T, base, path string, q url.Values, msg string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+base+path+"?"+q.Encode(), strings.NewReader(msg))
	req.Header.Set("Authorization", "Bearer "+apptest.PushSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"code":0`) {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
}

// expectPush waits for a push with body msg on c.
func expectPush(t *testing.T, c *client.Client, msg string) {
	t.Helper()
	deadline := time.After(apptest.WaitTimeout)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("mid %d: events closed waiting for %q", c.Mid(), msg)
			}
			if p, ok := ev.(client.Push); ok && string(p.Body) == msg {
				if p.Op != testOp {
					t.Fatalf("push %q has op %d", msg, p.Op)
				}
				return
			}
		case <-deadline:
			t.Fatalf("mid %d (key %s) never got %q", c.Mid(), c.Key(), msg)
		}
	}
}

// expectNoPush checks that nothing with body msg arrives for a while.
func expectNoPush(t *testing.T, c *client.Client, msg string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-c.Events():
			if p, ok := ev.(client.Push); ok && string(p.Body) == msg {
				t.Fatalf("mid %d got %q, which was not for it", c.Mid(), msg)
			}
		case <-deadline:
			return
		}
	}
}

func TestDistributedPush(t *testing.T) {
	e := newEnv(t)
	l1, l2 := e.StartLogic(t), e.StartLogic(t)
	a := e.StartComet(t, "comet-a")
	b := e.StartComet(t, "comet-b")
	e.StartJob(t)

	push := apptest.Accepts(testOp)
	alice := apptest.Dial(t, 1, a.TCP, push, apptest.Room("live://1")) // on a, in the room
	bobB := apptest.Dial(t, 2, b.TCP, push, apptest.Room("live://1"))  // on b, in the room
	bobA := apptest.Dial(t, 2, a.TCP, push)                            // bob's second device, on a
	carol := apptest.Dial(t, 3, b.TCP, push, apptest.Room("live://2")) // on b, another room
	everyone := []*client.Client{alice, bobB, bobA, carol}
	h1, h2 := l1.HTTPAddr(), l2.HTTPAddr()

	op := url.Values{"operation": {fmt.Sprint(testOp)}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range op {
			q[kk] = vv
		}
		q.Set(k, v)
		return q
	}

	// By key: only that device.
	pushHTTP(t, h1, "/goim/push/keys", with("keys", bobA.Key()), "by-key")
	expectPush(t, bobA, "by-key")
	expectNoPush(t, bobB, "by-key", 200*time.Millisecond)

	// By user, through the other logic: both of bob's devices, on both comets.
	pushHTTP(t, h2, "/goim/push/mids", with("mids", "2"), "by-mid")
	expectPush(t, bobB, "by-mid")
	expectPush(t, bobA, "by-mid")

	// By room: members on both comets, nobody else.
	q := with("type", "live")
	q.Set("room", "1")
	pushHTTP(t, h1, "/goim/push/room", q, "by-room")
	expectPush(t, alice, "by-room")
	expectPush(t, bobB, "by-room")
	expectNoPush(t, carol, "by-room", 200*time.Millisecond)

	// To all.
	pushHTTP(t, h2, "/goim/push/all", op, "to-all")
	for _, cl := range everyone {
		expectPush(t, cl, "to-all")
	}

	// Room counts come back from logic through heartbeats' data path.
	apptest.WaitFor(t, "room live://1 online count 2", func() bool {
		counts, err := l1.Logic().OnlineRoom(context.Background(), "live", []string{"1"})
		return err == nil && counts["1"] == 2
	})

	// Comet b stops: its clients' sessions go away, the others keep
	// receiving.
	sessions := e.Sessions(t)
	b.Stop()
	apptest.WaitFor(t, "comet b's sessions removed", func() bool {
		devs, err := sessions.Devices(context.Background(), []int64{2, 3})
		return err == nil && len(devs[3]) == 0 && len(devs[2]) == 1 && devs[2][0].Key == bobA.Key()
	})
	pushHTTP(t, h1, "/goim/push/all", op, "after-b")
	expectPush(t, alice, "after-b")
	expectPush(t, bobA, "after-b")
	pushHTTP(t, h1, "/goim/push/mids", with("mids", "2"), "bob-after-b")
	expectPush(t, bobA, "bob-after-b")
}
