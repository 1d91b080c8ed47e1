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
