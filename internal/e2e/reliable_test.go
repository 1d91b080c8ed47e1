package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/pkg/client"
)

// received collects what one device got, per conversation, in arrival
// order.
type received struct {
	mu    sync.Mutex
	convs map[string][]*protocol.Msg
}

func collect(c *client.Client, into *received) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev := range c.Events() { // closed when the client stops
			if m, ok := ev.(client.Message); ok {
				into.mu.Lock()
				into.convs[m.Msg.ConvId] = append(into.convs[m.Msg.ConvId], m.Msg)
				into.mu.Unlock()
			}
		}
	})
	return &wg
}

func (r *received) count(conv string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.convs[conv])
}

type ackLog struct {
	mu   sync.Mutex
	acks map[string][]*protocol.MsgSendAck // by conv, in ACK order per sender
}

func (a *ackLog) add(ack *protocol.MsgSendAck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks[ack.ConvId] = append(a.acks[ack.ConvId], ack)
}

// TestReliableMessagingSurvivesRestarts is issue 5's proof: several
// senders, 1:1 and a group, with a comet restart, a logic stop and a
// Redis restart in the middle. Every recipient device must end with every message exactly
// once and in seq order after its reconnect sync, and seq never goes back.
func TestReliableMessagingSurvivesRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test")
	}
	rs := testenv.StartRedis(t)
	e := newEnv(t, apptest.RedisAt(rs.Addr))
	firstLogic := e.StartLogic(t)
	e.StartLogic(t)
	a := e.StartComet(t, "comet-a")
	b := e.StartComet(t, "comet-b")
	aAddr, bAddr := a.TCP, b.TCP
	e.StartJob(t)

	const group = 100
	ctx := context.Background()
	st := e.Store(t)
	if _, err := st.CreateGroup(ctx, store.Group{ID: group, Name: "proof", Owner: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddMembers(ctx, group, []int64{2, 3, 10, 11}); err != nil {
		t.Fatal(err)
	}

	// Recipient devices: user 10 on both comets, user 11 on b.
	type device struct {
		name string
		mid  int64
		cl   *client.Client
		got  *received
		wg   *sync.WaitGroup
	}
	devices := []*device{
		{name: "u10-a", mid: 10}, {name: "u10-b", mid: 10}, {name: "u11-b", mid: 11},
	}
	addrsOf := map[string][]string{"u10-a": {aAddr, bAddr}, "u10-b": {bAddr, aAddr}, "u11-b": {bAddr, aAddr}}
	for _, d := range devices {
		d.cl = dialIM(t, d.mid, nil, addrsOf[d.name])
		d.got = &received{convs: map[string][]*protocol.Msg{}}
		d.wg = collect(d.cl, d.got)
	}

	// Senders 1, 2, 3 each send perConv messages to user 10 and to the group.
	const senders, perConv = 3, 200
	total := senders * perConv * 2
	acks := &ackLog{acks: map[string][]*protocol.MsgSendAck{}}
	var acked atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	// The last third of every sender's messages waits for the Redis
	// restart: however fast the sends go, some are sent after it, which
	// the seq checks below need.
	const gateAt = 2 * perConv / 3
	redisRestarted := make(chan struct{})
	for s := int64(1); s <= senders; s++ {
		addrs := []string{aAddr, bAddr}
		if s%2 == 0 {
			addrs = []string{bAddr, aAddr}
		}
		cl := dialIM(t, s, nil, addrs)
		go func() {
			for range cl.Events() { // senders only care about ACKs
			}
		}()
		wg.Go(func() {
			for i := 0; i < perConv; i++ {
				if i == gateAt {
					<-redisRestarted
				}
				for _, to := range []client.Conversation{client.User(10), client.Group(group)} {
					sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
					ack, err := cl.Send(sctx, to, 0, []byte(fmt.Sprintf("s%d-%d", s, i)))
					cancel()
					if err != nil {
						errs <- fmt.Errorf("sender %d message %d: %w", s, i, err)
						return
					}
					acks.add(ack)
					acked.Add(1)
				}
			}
		})
	}

	// Restart comet a after a third, stop a logic at half, restart Redis
	// after two thirds (every sender waiting at its gate).
	seqBeforeRedis := map[string]int64{}
	apptest.WaitForWithin(t, progressTimeout, "a third of the messages acked", func() bool { return acked.Load() >= int64(total/3) })
	a.Restart(t) // where its clients expect it
	// Stop one logic half way: the comets' streams to it drain (calls in
	// flight answered, later ones refused and sent to the other logic).
	apptest.WaitForWithin(t, progressTimeout, "half of the messages acked", func() bool { return acked.Load() >= int64(total/2) })
	firstLogic.Stop()
	apptest.WaitForWithin(t, progressTimeout, "two thirds of the messages acked", func() bool { return acked.Load() >= int64(senders*gateAt*2) })
	acks.mu.Lock()
	for conv, list := range acks.acks {
		for _, ack := range list {
			seqBeforeRedis[conv] = max(seqBeforeRedis[conv], ack.Seq)
		}
	}
	acks.mu.Unlock()
	rs.Stop()
	time.Sleep(300 * time.Millisecond)
	rs.Start()
	close(redisRestarted)

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if int(acked.Load()) != total {
		t.Fatalf("acked %d of %d", acked.Load(), total)
	}

	// Seq: unique per conversation, and everything sent after the Redis
	// restart is above everything acked before it.
	convs := []string{store.SingleConvID(1, 10), store.SingleConvID(2, 10), store.SingleConvID(3, 10), store.GroupConvID(group)}
	want := map[string]map[int64]bool{} // conv -> msg ids
	for conv, list := range acks.acks {
		seen := map[int64]bool{}
		want[conv] = map[int64]bool{}
		for _, ack := range list {
			if seen[ack.Seq] {
				t.Fatalf("%s: seq %d acked twice", conv, ack.Seq)
			}
			seen[ack.Seq] = true
			want[conv][ack.MsgId] = true
		}
	}
	jumped := false
	for conv, list := range acks.acks {
		for _, ack := range list[len(list)-10:] {
			if ack.Seq <= seqBeforeRedis[conv] {
				t.Fatalf("%s: seq %d after the Redis restart is not above %d", conv, ack.Seq, seqBeforeRedis[conv])
			}
			if ack.Seq > seqBeforeRedis[conv]+int64(perConv*senders) {
				jumped = true
			}
		}
	}
	if !jumped {
		t.Fatal("no conversation jumped past its stored max after the Redis restart")
	}

	// Reconnect every device with its cursors (the reconnect sync), then
	// count what each holds.
	for _, d := range devices {
		// Close first and drain Events to its end: every message the old
		// client queued (and counted in its cursors) is recorded, and the
		// cursors are final.
		d.cl.Close()
		d.wg.Wait()
		cursors := d.cl.Cursors()
		d.cl = dialIM(t, d.mid, cursors, addrsOf[d.name])
		d.wg = collect(d.cl, d.got)
	}
	for _, d := range devices {
		var myConvs []string
		if d.mid == 10 {
			myConvs = convs
		} else {
			myConvs = []string{store.GroupConvID(group)}
		}
		for _, conv := range myConvs {
			if !apptest.Eventually(progressTimeout, func() bool { return d.got.count(conv) >= len(want[conv]) }) {
				d.got.mu.Lock()
				got := d.got.convs[conv]
				have := map[int64]bool{}
				for _, m := range got {
					have[m.MsgId] = true
				}
				var missing []int64
				for _, ack := range acks.acks[conv] {
					if !have[ack.MsgId] {
						missing = append(missing, ack.Seq)
					}
				}
				d.got.mu.Unlock()
				sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
				for _, seq := range missing {
					stored, _, _ := st.Range(ctx, conv, seq-1, 1)
					var ackID int64
					for _, ack := range acks.acks[conv] {
						if ack.Seq == seq {
							ackID = ack.MsgId
						}
					}
					for _, m := range stored {
						t.Logf("seq %d: ack msg_id %d; store seq %d msg_id %d client id %s", seq, ackID, m.Seq, m.MsgId, m.ClientMsgId)
					}
				}
				t.Fatalf("%s holds %d of %d messages of %s; missing seqs %v; cursor %d", d.name, len(got), len(want[conv]), conv, missing, d.cl.Cursors()[conv])
			}
		}
		time.Sleep(200 * time.Millisecond) // let any duplicate show up
		d.got.mu.Lock()
		for _, conv := range myConvs {
			lost, dup, disorder := 0, 0, 0
			have := map[int64]int{}
			var last int64
			for _, m := range d.got.convs[conv] {
				have[m.MsgId]++
				if m.Seq <= last {
					disorder++
				}
				last = m.Seq
			}
			for id := range want[conv] {
				if have[id] == 0 {
					lost++
				}
			}
			for _, n := range have {
				dup += n - 1
			}
			if lost != 0 || dup != 0 || disorder != 0 {
				seqs := make([]int64, 0, len(d.got.convs[conv]))
				for _, m := range d.got.convs[conv] {
					seqs = append(seqs, m.Seq)
				}
				sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
				t.Errorf("%s %s: lost %d, duplicated %d, out of order %d (of %d)", d.name, conv, lost, dup, disorder, len(want[conv]))
			}
		}
		d.got.mu.Unlock()
	}
}

// dialIM connects an IM device of mid to the comets at addrs (tried in
// order), syncing from cursors.
func dialIM(t testing.TB, mid int64, cursors map[string]int64, addrs []string) *client.Client {
	t.Helper()
	return apptest.Dial(t, mid, addrs[0], apptest.Fallback(addrs[1:]...), apptest.Cursors(cursors))
}
