package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
	"github.com/hubuim/hubuim/pkg/client"
)

// TestMemberRemovalReachesEveryLogic: a member removed through one logic
// can no longer send to the group through any logic, soon — not only
// after the other replica's member cache entry expires: the logics share
// membership changes over Redis (members.RedisEvents).
func TestMemberRemovalReachesEveryLogic(t *testing.T) {
	// The member caches keep a list for an hour: only the event can make
	// the other logic see the removal.
	e := newEnv(t, apptest.MemberCacheTTL(time.Hour))
	owner := e.StartLogic(t)
	e.StartLogic(t)
	c := e.StartComet(t, "comet-a")
	const group, sends = 300, 8
	ctx := context.Background()
	st := e.Store(t)
	if _, err := st.CreateGroup(ctx, store.Group{ID: group, Name: "members", Owner: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddMembers(ctx, group, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	u2 := dialIM(t, 2, nil, []string{c.TCP})
	go func() {
		for range u2.Events() {
		}
	}()
	send := func(i int) error {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := u2.Send(sctx, client.Group(group), 0, []byte(fmt.Sprint("m", i)))
		return err
	}
	// The comet's streams alternate between the two logics: both cache
	// the member list.
	for i := range sends {
		if err := send(i); err != nil {
			t.Fatalf("send %d as a member: %v", i, err)
		}
	}

	tok, err := auth.SignHS256([]byte(apptest.JWTSecret), 1, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://%s/im/v1/groups/%d/members/2", owner.HTTPAddr(), group), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("remove member: HTTP %d", resp.StatusCode)
	}

	// Soon (the event travels through Redis pub/sub: on a loaded machine
	// a send right after the removal can still beat it), every send is
	// refused, whichever logic handles it: with hour-long caches, only
	// the event can have told the other logic.
	refused := func(i int) bool {
		var se *client.StatusError
		return errors.As(send(i), &se) && se.Status == protocol.Status_STATUS_FORBIDDEN
	}
	waitfor.Until(t, apptest.WaitTimeout, "every send refused after the removal", func() bool {
		for i := range sends {
			if !refused(sends + i) {
				return false
			}
		}
		return true
	})
}
