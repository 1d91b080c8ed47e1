package client

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/store"
)

type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) Next() (int64, error) { return s.n.Add(1), nil }

type nopProducer struct{}

func (nopProducer) Publish(context.Context, string, []byte, []byte) error { return nil }
func (nopProducer) Close() error                                          { return nil }

// newIMService is logic's IM service over a Bolt store in a temp dir.
func newIMService(tb testing.TB, cfg im.Config) (*im.Service, *store.Bolt) {
	tb.Helper()
	st, err := store.OpenBolt(store.BoltConfig{Dir: tb.TempDir(), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	seq, err := im.NewSeqAllocator(im.NewMemorySeqCounter(), st, im.SeqAllocatorConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := im.NewService(cfg, im.Deps{Seq: seq, Dedup: im.NewMemoryDedup(0, 0), Store: st, IDs: &seqIDs{}, Producer: nopProducer{}})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, st
}

// End to end against logic's sync: a device that was away while more
// conversations moved than one cursor sync reply holds catches up on every
// one of them on reconnect, with no push or notice.
func TestCursorSyncAgainstIMService(t *testing.T) {
	const (
		peers     = im.DefaultMaxSyncConvs + 30
		perPeer   = 3
		groupID   = 7
		groupMsgs = im.DefaultCursorSyncLimit + 5 // needs a pull after its first page
	)
	svc, st := newIMService(t, im.Config{})
	srv := newFakeServer(t, TransportTCP)
	ctx := context.Background()
	srv.set(func(s *fakeServer) {
		s.syncFn = func(mid int64, req *protocol.Sync) *protocol.SyncReply { return svc.Sync(ctx, mid, req) }
	})
	cfg := testConfig(srv)
	cfg.SendTimeout = 5 * time.Second // a 200-conversation reply under -race
	user := cfg.Mid

	want := map[string]int64{}
	send := func(from int64, m *protocol.MsgSend) {
		t.Helper()
		ack := svc.Send(ctx, from, "d", m)
		if ack.Status != protocol.Status_STATUS_OK {
			t.Fatalf("send: %v %s", ack.Status, ack.Reason)
		}
		want[ack.ConvId] = ack.Seq
	}
	for p := int64(1); p <= peers; p++ {
		for i := 0; i < perPeer; i++ {
			send(1000+p, &protocol.MsgSend{ClientMsgId: fmt.Sprintf("%d-%d", p, i), ConvType: protocol.ConvType_CONV_TYPE_SINGLE, To: user, Payload: []byte("hi")})
		}
	}
	if _, err := st.CreateGroup(ctx, store.Group{ID: groupID, Name: "g", Owner: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddMembers(ctx, groupID, []int64{user}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < groupMsgs; i++ {
		send(1, &protocol.MsgSend{ClientMsgId: fmt.Sprintf("g-%d", i), ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: groupID, Payload: []byte("hi")})
	}
	// The device held the first message of every other 1:1 conversation.
	cfg.Cursors = map[string]int64{}
	for p := int64(2); p <= peers; p += 2 {
		cfg.Cursors[store.SingleConvID(user, 1000+p)] = 1
	}
	if len(want) != peers+1 {
		t.Fatalf("%d conversations, want %d", len(want), peers+1)
	}

	c, r := startClient(t, cfg)
	waitCursorSyncDone(t, c, srv)
	waitFor(t, "every conversation caught up", func() bool {
		return maps.Equal(c.Cursors(), want)
	})
	total := 0
	for conv, top := range want {
		total += int(top - cfg.Cursors[conv])
	}
	waitMessages(t, r, total)
	for conv, top := range want {
		from := cfg.Cursors[conv]
		if got := msgSeqs(r, conv); !slices.Equal(got, seqRange(from+1, top)) {
			t.Fatalf("%s delivered %v, want %d..%d", conv, got, from+1, top)
		}
	}
	if n := len(cursorSyncsOf(srv)); n != 2 {
		t.Fatalf("%d cursor sync rounds for %d conversations, want 2", n, len(want))
	}
	for _, e := range eventsOf[Error](r) {
		t.Errorf("error event: %v", e.Err)
	}
}

// End to end: the device holds more conversations than its Sync has room
// for cursors, and a reply holds only a few (SyncMaxBytes). The rounds
// carry every cursor to the server and catch up every conversation,
// without a stall and without a push.
func TestCursorSyncAgainstIMServiceCursorsPastMaxBody(t *testing.T) {
	const (
		peers   = 40
		held    = im.DefaultCursorSyncLimit + 1 // a page from seq 0 is all duplicates
		payload = 100
	)
	svc, _ := newIMService(t, im.Config{SyncMaxBytes: 10 * payload})
	srv := newFakeServer(t, TransportTCP)
	ctx := context.Background()
	srv.set(func(s *fakeServer) {
		s.syncFn = func(mid int64, req *protocol.Sync) *protocol.SyncReply { return svc.Sync(ctx, mid, req) }
	})
	cfg := testConfig(srv)
	cfg.SendTimeout = 5 * time.Second
	cfg.MaxBody = 200 // about a dozen cursors
	user := cfg.Mid
	cfg.Cursors = map[string]int64{}
	body := make([]byte, payload)
	for p := int64(1); p <= peers; p++ {
		for i := 0; i <= held; i++ {
			ack := svc.Send(ctx, 1000+p, "d", &protocol.MsgSend{ClientMsgId: fmt.Sprintf("%d-%d", p, i), ConvType: protocol.ConvType_CONV_TYPE_SINGLE, To: user, Payload: body})
			if ack.Status != protocol.Status_STATUS_OK {
				t.Fatalf("send: %v %s", ack.Status, ack.Reason)
			}
		}
		cfg.Cursors[store.SingleConvID(user, 1000+p)] = held
	}
	c, r := startClient(t, cfg)
	waitCursorSyncDone(t, c, srv)
	waitFor(t, "every conversation caught up", func() bool {
		for _, seq := range c.Cursors() {
			if seq != held+1 {
				return false
			}
		}
		return true
	})
	waitMessages(t, r, peers)
	syncs := cursorSyncsOf(srv)
	sent := map[string]bool{}
	for _, q := range syncs {
		for _, cu := range q.Cursors {
			sent[cu.ConvId] = true
		}
	}
	if len(sent) != peers || len(syncs) > 2*peers {
		t.Fatalf("%d rounds carried cursors of %d of %d conversations", len(syncs), len(sent), peers)
	}
	for conv := range cfg.Cursors {
		if got := msgSeqs(r, conv); !slices.Equal(got, []int64{held + 1}) {
			t.Fatalf("%s delivered %v, want [%d]", conv, got, held+1)
		}
	}
	for _, e := range eventsOf[Error](r) {
		t.Errorf("error event: %v", e.Err)
	}
}

// A cursor-sync round built while a pull was in flight carries the pull's
// target as the cursor. When that pull ends short — seq 15 allocated but
// not stored yet (settled_seq 14), or the pull refused — the round's reply
// vouches only for seqs above its cursor: the client must not skip 13..20
// on it, but pull them. (Found by review: the client skipped 15 for good
// and dropped its later push as a duplicate.)
func TestCursorRoundAfterShortPullKeepsStoredSeq(t *testing.T) {
	for _, short := range []string{"unsettled", "refused"} {
		t.Run(short, func(t *testing.T) { testCursorRoundAfterShortPull(t, short) })
	}
}

func testCursorRoundAfterShortPull(t *testing.T, short string) {
	s := newFakeServer(t, "tcp")
	msgs := func(from, to int64, skip ...int64) []*protocol.Msg {
		var out []*protocol.Msg
		for seq := from; seq <= to; seq++ {
			if !slices.Contains(skip, seq) {
				out = append(out, &protocol.Msg{ConvId: "c", Seq: seq, MsgId: seq, Payload: []byte("x")})
			}
		}
		return out
	}
	var stored15 atomic.Bool
	s.set(func(s *fakeServer) {
		s.syncFn = func(_ int64, req *protocol.Sync) *protocol.SyncReply {
			if req.ConvId == "c" { // a pull
				switch {
				case stored15.Load():
					return &protocol.SyncReply{Convs: []*protocol.ConvMessages{{ConvId: "c",
						Msgs: msgs(req.FromSeq+1, 21), MaxSeq: 21, SettledSeq: 21}}}
				case short == "refused":
					return &protocol.SyncReply{Status: protocol.Status_STATUS_FORBIDDEN}
				default:
					return &protocol.SyncReply{Convs: []*protocol.ConvMessages{{ConvId: "c",
						Msgs: msgs(req.FromSeq+1, 20, 15), MaxSeq: 20, SettledSeq: 14}}}
				}
			}
			var cur int64
			for _, c := range req.Cursors {
				if c.ConvId == "c" {
					cur = c.Seq
				}
			}
			if cur <= 10 { // round 1: a full page, and more conversations
				return &protocol.SyncReply{MoreConvs: true, Convs: []*protocol.ConvMessages{{ConvId: "c",
					Msgs: msgs(11, 12), More: true, MaxSeq: 20, SettledSeq: 12}}}
			}
			// Round 2 carries the pull's target (20) as the cursor; 15 was
			// stored meanwhile, and 21 came.
			stored15.Store(true)
			return &protocol.SyncReply{Convs: []*protocol.ConvMessages{{ConvId: "c",
				Msgs: msgs(cur+1, 21), MaxSeq: 21, SettledSeq: 21}}}
		}
	})
	cfg := testConfig(s)
	cfg.Cursors = map[string]int64{"c": 10}
	c, r := startClient(t, cfg)
	// Delivery is in seq order: once 21 is out, so is everything below.
	waitFor(t, "seq 21", func() bool { return slices.Contains(msgSeqs(r, "c"), 21) })
	if got, want := msgSeqs(r, "c"), []int64{11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v (cursor %d), want %v", got, c.Cursors()["c"], want)
	}
}
