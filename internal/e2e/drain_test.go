package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/pkg/client"
)

// A draining comet marks itself draining in discovery, kicks its clients
// with SERVER_DRAINING, and they reconnect to the other comet; messages
// sent to them meanwhile arrive live or by the reconnect sync.
func TestCometDrain(t *testing.T) {
	e := newEnv(t)
	e.StartLogic(t)
	a := e.StartComet(t, "comet-a")
	b := e.StartComet(t, "comet-b")
	e.StartJob(t)

	const receivers = 4
	type rx struct {
		cl     *client.Client
		kicked atomic.Bool
		got    *received
	}
	var rxs []*rx
	for i := int64(0); i < receivers; i++ {
		r := &rx{cl: apptest.Dial(t, 20+i, a.TCP, apptest.Fallback(b.TCP)), got: &received{convs: map[string][]*protocol.Msg{}}}
		rxs = append(rxs, r)
		go func() {
			for ev := range r.cl.Events() {
				switch e := ev.(type) {
				case client.Kicked:
					if e.Reason == protocol.KickReason_KICK_REASON_SERVER_DRAINING {
						r.kicked.Store(true)
					}
				case client.Message:
					r.got.mu.Lock()
					r.got.convs[e.Msg.ConvId] = append(r.got.convs[e.Msg.ConvId], e.Msg)
					r.got.mu.Unlock()
				}
			}
		}()
	}
	sender := apptest.Dial(t, 1, b.TCP)
	go func() {
		for range sender.Events() {
		}
	}()

	// The draining flag reaches discovery before the comet goes away.
	reg := e.Registry(t)
	watch, err := reg.Watch(context.Background(), discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	sawDraining := make(chan struct{})
	go func() {
		for list := range watch {
			for _, ins := range list {
				if ins.ID == "comet-a" && ins.Draining {
					close(sawDraining)
					return
				}
			}
		}
	}()

	const perReceiver = 40
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Go(func() {
		for i := 0; i < perReceiver; i++ {
			for _, r := range rxs {
				if _, err := sender.Send(context.Background(), client.User(r.cl.Mid()), 0, []byte(fmt.Sprint(i))); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				sent.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	apptest.WaitFor(t, "some messages sent", func() bool { return sent.Load() >= receivers*perReceiver/4 })
	a.Stop() // SIGTERM: drain
	wg.Wait()

	select {
	case <-sawDraining:
	case <-time.After(apptest.WaitTimeout):
		t.Fatal("discovery never showed comet-a draining")
	}
	for _, r := range rxs {
		if !r.kicked.Load() {
			t.Errorf("mid %d was not kicked with SERVER_DRAINING", r.cl.Mid())
		}
		conv := fmt.Sprintf("s:1:%d", r.cl.Mid())
		if !apptest.Eventually(progressTimeout, func() bool { return r.got.count(conv) >= perReceiver }) {
			t.Fatalf("mid %d holds %d of %d messages after the drain", r.cl.Mid(), r.got.count(conv), perReceiver)
		}
		r.got.mu.Lock()
		seen := map[int64]bool{}
		var last int64
		for _, m := range r.got.convs[conv] {
			if seen[m.Seq] || m.Seq <= last {
				t.Errorf("mid %d: seq %d duplicated or out of order", r.cl.Mid(), m.Seq)
			}
			seen[m.Seq], last = true, m.Seq
		}
		r.got.mu.Unlock()
	}
}
