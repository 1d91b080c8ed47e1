package im

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// sendSingles sends n messages from each of peers to user and returns the
// conversations' ids.
func sendSingles(tb testing.TB, h *harness, user int64, peers []int64, n int, payload string) []string {
	tb.Helper()
	ctx := context.Background()
	ids := make([]string, 0, len(peers))
	for _, p := range peers {
		for i := 0; i < n; i++ {
			ack := h.svc.Send(ctx, p, "d", &protocol.MsgSend{ClientMsgId: fmt.Sprintf("%d-%d", p, i), ConvType: protocol.ConvType_CONV_TYPE_SINGLE, To: user, Payload: []byte(payload)})
			if ack.Status != protocol.Status_STATUS_OK {
				tb.Fatalf("send from %d: %v", p, ack)
			}
		}
		ids = append(ids, store.SingleConvID(user, p))
	}
	return ids
}

func peerRange(first int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = first + int64(i)
	}
	return out
}

// cursorSync turns cursors into a Sync.
func cursorSync(cursors map[string]int64) *protocol.Sync {
	req := &protocol.Sync{}
	for id, seq := range cursors {
		req.Cursors = append(req.Cursors, &protocol.Cursor{ConvId: id, Seq: seq})
	}
	return req
}

// apply advances cursors past every message of reply, as a client does
// (a cut page's rest is pulled by conversation: the cursor goes to max_seq).
func apply(tb testing.TB, cursors map[string]int64, reply *protocol.SyncReply) (progressed int) {
	tb.Helper()
	if reply.Status != protocol.Status_STATUS_OK {
		tb.Fatalf("sync: %v %s", reply.Status, reply.Reason)
	}
	for _, c := range reply.Convs {
		if c.MaxSeq > cursors[c.ConvId] {
			cursors[c.ConvId] = c.MaxSeq
			progressed++
		}
	}
	return progressed
}

func TestCursorSyncMoreConvsRounds(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	const user = 1
	extra := 50
	convs := sendSingles(t, h, user, peerRange(1000, DefaultMaxSyncConvs+extra), 2, "x")

	// Round 1: a fresh device (no cursors) gets the first DefaultMaxSyncConvs.
	cursors := map[string]int64{}
	r1 := h.svc.Sync(ctx, user, cursorSync(cursors))
	if len(r1.Convs) != DefaultMaxSyncConvs || !r1.MoreConvs {
		t.Fatalf("round 1: %d convs, more_convs %v; want %d, true", len(r1.Convs), r1.MoreConvs, DefaultMaxSyncConvs)
	}
	for _, c := range r1.Convs {
		if len(c.Msgs) != 2 || c.Msgs[0].Seq != 1 || c.Msgs[1].Seq != 2 {
			t.Fatalf("round 1 %s: %d msgs", c.ConvId, len(c.Msgs))
		}
	}
	apply(t, cursors, r1)

	// Round 2 with the advanced cursors: the rest, flag clear.
	r2 := h.svc.Sync(ctx, user, cursorSync(cursors))
	if len(r2.Convs) != extra || r2.MoreConvs {
		t.Fatalf("round 2: %d convs, more_convs %v; want %d, false", len(r2.Convs), r2.MoreConvs, extra)
	}
	for _, c := range r2.Convs {
		if _, seen := cursors[c.ConvId]; seen {
			t.Fatalf("round 2 returned %s again", c.ConvId)
		}
	}
	apply(t, cursors, r2)
	if len(cursors) != len(convs) {
		t.Fatalf("caught up %d of %d conversations", len(cursors), len(convs))
	}
	for _, id := range convs {
		if cursors[id] != 2 {
			t.Fatalf("%s at %d, want 2", id, cursors[id])
		}
	}

	// Round 3: nothing moved.
	r3 := h.svc.Sync(ctx, user, cursorSync(cursors))
	if len(r3.Convs) != 0 || r3.MoreConvs {
		t.Fatalf("round 3: %d convs, more_convs %v; want none", len(r3.Convs), r3.MoreConvs)
	}
}

func TestCursorSyncExactlyFullReplyHasNoMore(t *testing.T) {
	h := newHarness(t, Config{})
	sendSingles(t, h, 1, peerRange(1000, DefaultMaxSyncConvs), 1, "x")
	r := h.svc.Sync(context.Background(), 1, &protocol.Sync{})
	if len(r.Convs) != DefaultMaxSyncConvs || r.MoreConvs {
		t.Fatalf("%d convs, more_convs %v; want %d, false", len(r.Convs), r.MoreConvs, DefaultMaxSyncConvs)
	}
}

// Conversations the client has a cursor for come before those it has none
// for, each in conv id order, whatever the order of the request.
func TestCursorSyncOrderKnownFirst(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	convs := sendSingles(t, h, 1, peerRange(1000, DefaultMaxSyncConvs+10), 2, "x")
	// Cursors (at seq 1: moved) for the last ten conversations by id.
	sorted := append([]string(nil), convs...)
	slices.Sort(sorted)
	cursors := map[string]int64{}
	for _, id := range sorted[len(sorted)-10:] {
		cursors[id] = 1
	}
	for try := 0; try < 3; try++ { // map order varies the request's order
		r := h.svc.Sync(ctx, 1, cursorSync(cursors))
		if len(r.Convs) != DefaultMaxSyncConvs || !r.MoreConvs {
			t.Fatalf("%d convs, more_convs %v", len(r.Convs), r.MoreConvs)
		}
		for i, c := range r.Convs[:10] {
			if c.ConvId != sorted[len(sorted)-10+i] || len(c.Msgs) != 1 || c.Msgs[0].Seq != 2 {
				t.Fatalf("position %d: %s (%d msgs), want known %s from seq 2", i, c.ConvId, len(c.Msgs), sorted[len(sorted)-10+i])
			}
		}
		for i, c := range r.Convs[10:] {
			if c.ConvId != sorted[i] {
				t.Fatalf("position %d: %s, want %s", 10+i, c.ConvId, sorted[i])
			}
		}
	}
}

// The reply's payload bytes are bounded by SyncMaxBytes: conversations
// that do not fit are left for the next round, which gets them.
func TestCursorSyncByteBudgetRounds(t *testing.T) {
	const (
		payload  = 1000
		perConv  = 3
		nConvs   = 30
		maxBytes = 10 * payload
	)
	h := newHarness(t, Config{SyncMaxBytes: maxBytes})
	ctx := context.Background()
	convs := sendSingles(t, h, 1, peerRange(1000, nConvs), perConv, strings.Repeat("p", payload))
	cursors := map[string]int64{}
	rounds := 0
	for {
		rounds++
		if rounds > nConvs {
			t.Fatalf("no end after %d rounds", rounds)
		}
		r := h.svc.Sync(ctx, 1, cursorSync(cursors))
		total := 0
		for _, c := range r.Convs {
			for _, m := range c.Msgs {
				total += len(m.Payload)
			}
		}
		// Each page is cut to what is left, keeping at least one message.
		if total > maxBytes+payload {
			t.Fatalf("round %d: %d payload bytes, bound %d", rounds, total, maxBytes)
		}
		if n := apply(t, cursors, r); n == 0 && r.MoreConvs {
			t.Fatalf("round %d made no progress but set more_convs", rounds)
		}
		if !r.MoreConvs {
			break
		}
	}
	if rounds < 3 {
		t.Fatalf("%d rounds; the byte budget should have split the sync", rounds)
	}
	for _, id := range convs {
		if cursors[id] != perConv {
			t.Fatalf("%s at %d, want %d", id, cursors[id], perConv)
		}
	}
}

// after_conv_id leaves out the conversations without a cursor up to it
// (an earlier round returned them), never those with one: rounds progress
// through conversations whose cursors did not fit in the Sync.
func TestCursorSyncAfterConvID(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	convs := sendSingles(t, h, 1, peerRange(1000, DefaultMaxSyncConvs+20), 1, "x")
	slices.Sort(convs)
	// The client holds everything but has room for one cursor only, for
	// the first conversation; it moves again.
	cursors := map[string]int64{convs[0]: 1}
	seen := map[string]bool{}
	after := ""
	movedAgain := false
	for round := 1; ; round++ {
		if round > 3 {
			t.Fatal("rounds do not end")
		}
		if round == 2 {
			// convs[0] (peer 1000, sorted first) reaches seq 2.
			if ack := h.svc.Send(ctx, 1000, "d", single(1, "again")); ack.Status != protocol.Status_STATUS_OK || ack.ConvId != convs[0] || ack.Seq != 2 {
				t.Fatalf("send again: %v", ack)
			}
		}
		req := cursorSync(cursors)
		req.AfterConvId = after
		r := h.svc.Sync(ctx, 1, req)
		if r.Status != protocol.Status_STATUS_OK {
			t.Fatal(r)
		}
		for _, c := range r.Convs {
			if c.ConvId == convs[0] {
				if round != 2 || len(c.Msgs) != 1 || c.Msgs[0].Seq != 2 {
					t.Fatalf("round %d: the conversation with a cursor: %v", round, c.Msgs)
				}
				movedAgain = true
				continue
			}
			if seen[c.ConvId] || c.ConvId <= after {
				t.Fatalf("round %d returned %s again (after %q)", round, c.ConvId, after)
			}
			seen[c.ConvId] = true
			after = c.ConvId
		}
		if !r.MoreConvs {
			break
		}
	}
	if !movedAgain {
		t.Fatal("the conversation with a cursor that moved again was left out")
	}
	if len(seen) != len(convs)-1 {
		t.Fatalf("rounds returned %d of the %d conversations without a cursor", len(seen), len(convs)-1)
	}
}
