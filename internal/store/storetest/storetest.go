// Package storetest is the conformance suite every store.Store
// implementation must pass. An implementation's test calls Run with a
// constructor that returns a fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// NewStore returns a new empty store. It should register its own cleanup;
// Run also closes the store at the end of each subtest (Close must be
// idempotent).
type NewStore func(tb testing.TB) store.Store

// testTimeout bounds each subtest's context.
const testTimeout = 30 * time.Second

// Run runs the conformance suite against the stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s store.Store)
	}{
		{"AppendRangeWithGaps", testAppendRange},
		{"RangeLimitMore", testRangeLimit},
		{"IdempotentAppend", testIdempotent},
		{"ClientIDDedup", testClientID},
		{"InvalidInput", testInvalid},
		{"MaxSeq", testMaxSeq},
		{"AppendBatch", testAppendBatch},
		{"AppendTouch", testAppendTouch},
		{"ConvIndexMonotonic", testConvIndex},
		{"SyncPage", testSyncPage},
		{"Delivered", testDelivered},
		{"MovedSince", testMovedSince},
		{"LastSeqFollowsMessages", testLastSeqFollowsMessages},
		{"Groups", testGroups},
		{"GroupsNotFound", testGroupsNotFound},
		{"ConcurrentAppend", testConcurrentAppend},
		{"ConcurrentAppendTouch", testConcurrentAppendTouch},
		{"ConcurrentDuplicate", testConcurrentDuplicate},
		{"ConcurrentTouch", testConcurrentTouch},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			tc.fn(t, ctx, s)
		})
	}
}

// Msg returns a test message; exported for implementations' benchmarks.
func Msg(conv string, seq int64) *protocol.Msg {
	c, _ := store.ParseConvID(conv)
	return &protocol.Msg{
		ConvId:      conv,
		Seq:         seq,
		MsgId:       seq*1000 + 7,
		Sender:      1,
		ClientMsgId: "",
		ContentType: 1,
		Payload:     []byte(fmt.Sprintf("payload %s %d", conv, seq)),
		ServerTime:  1700000000000 + seq,
		ConvType:    c.Type,
		To:          2,
	}
}

func mustAppend(t testing.TB, ctx context.Context, s store.Store, m *protocol.Msg) {
	t.Helper()
	stored, dup, err := s.Append(ctx, m)
	if err != nil {
		t.Fatalf("Append(%s, %d): %v", m.GetConvId(), m.GetSeq(), err)
	}
	if dup {
		t.Fatalf("Append(%s, %d): dup on first insert", m.GetConvId(), m.GetSeq())
	}
	if !proto.Equal(stored, m) {
		t.Fatalf("Append returned %v, want %v", stored, m)
	}
}

func seqs(msgs []*protocol.Msg) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

func checkRange(t testing.TB, ctx context.Context, s store.Store, conv string, from int64, limit int, want []int64, wantMore bool) []*protocol.Msg {
	t.Helper()
	msgs, more, err := s.Range(ctx, conv, from, limit)
	if err != nil {
		t.Fatalf("Range(%s, %d, %d): %v", conv, from, limit, err)
	}
	if got := seqs(msgs); !slices.Equal(got, want) || more != wantMore {
		t.Fatalf("Range(%s, %d, %d) = %v more=%v, want %v more=%v", conv, from, limit, got, more, want, wantMore)
	}
	return msgs
}

func testAppendRange(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(1, 2)
	order := []int64{5, 1, 3, 2, 8}
	sent := map[int64]*protocol.Msg{}
	for _, seq := range order {
		m := Msg(conv, seq)
		m.ClientMsgId = fmt.Sprintf("c-%d", seq)
		sent[seq] = m
		mustAppend(t, ctx, s, m)
	}
	msgs := checkRange(t, ctx, s, conv, 0, 10, []int64{1, 2, 3, 5, 8}, false)
	for _, m := range msgs {
		if !proto.Equal(m, sent[m.GetSeq()]) {
			t.Fatalf("seq %d: got %v, want %v", m.GetSeq(), m, sent[m.GetSeq()])
		}
	}
	checkRange(t, ctx, s, conv, 3, 10, []int64{5, 8}, false)
	checkRange(t, ctx, s, conv, 4, 10, []int64{5, 8}, false) // from a hole
	checkRange(t, ctx, s, conv, 8, 10, nil, false)
	checkRange(t, ctx, s, conv, math.MaxInt64, 10, nil, false)
	checkRange(t, ctx, s, conv, -5, 10, []int64{1, 2, 3, 5, 8}, false)
	checkRange(t, ctx, s, store.SingleConvID(1, 3), 0, 10, nil, false)
	// Another conversation does not leak in.
	mustAppend(t, ctx, s, Msg(store.GroupConvID(7), 4))
	checkRange(t, ctx, s, conv, 0, 10, []int64{1, 2, 3, 5, 8}, false)
	checkRange(t, ctx, s, store.GroupConvID(7), 0, 10, []int64{4}, false)
}

func testRangeLimit(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.GroupConvID(3)
	for seq := int64(1); seq <= 7; seq++ {
		mustAppend(t, ctx, s, Msg(conv, seq))
	}
	checkRange(t, ctx, s, conv, 0, 2, []int64{1, 2}, true)
	checkRange(t, ctx, s, conv, 2, 2, []int64{3, 4}, true)
	checkRange(t, ctx, s, conv, 4, 3, []int64{5, 6, 7}, false)
	checkRange(t, ctx, s, conv, 0, 7, []int64{1, 2, 3, 4, 5, 6, 7}, false)
	checkRange(t, ctx, s, conv, 0, 6, []int64{1, 2, 3, 4, 5, 6}, true)
	// limit <= 0 means the default, which is larger than 7.
	checkRange(t, ctx, s, conv, 0, 0, []int64{1, 2, 3, 4, 5, 6, 7}, false)
	checkRange(t, ctx, s, conv, 0, -1, []int64{1, 2, 3, 4, 5, 6, 7}, false)
}

func testIdempotent(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(10, 20)
	m := Msg(conv, 1)
	mustAppend(t, ctx, s, m)
	again := proto.Clone(m).(*protocol.Msg)
	again.Payload = []byte("a retry may differ in payload; the stored one wins")
	stored, dup, err := s.Append(ctx, again)
	if err != nil || !dup {
		t.Fatalf("re-append: dup=%v err=%v, want dup", dup, err)
	}
	if !proto.Equal(stored, m) {
		t.Fatalf("re-append returned %v, want the stored %v", stored, m)
	}
	other := Msg(conv, 1)
	other.MsgId = m.MsgId + 1
	if _, _, err := s.Append(ctx, other); !errors.Is(err, store.ErrSeqConflict) {
		t.Fatalf("different msg at same seq: err=%v, want ErrSeqConflict", err)
	}
	checkRange(t, ctx, s, conv, 0, 10, []int64{1}, false)
	msgs, _, _ := s.Range(ctx, conv, 0, 10)
	if !proto.Equal(msgs[0], m) {
		t.Fatalf("stored message changed: %v", msgs[0])
	}
}

func testClientID(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(1, 2)
	m := Msg(conv, 1)
	m.ClientMsgId = "client-1"
	mustAppend(t, ctx, s, m)

	// A resend that got a new seq and msg id (Redis dedup lost) returns the
	// original.
	resend := Msg(conv, 2)
	resend.ClientMsgId = "client-1"
	resend.MsgId = 99999
	stored, dup, err := s.Append(ctx, resend)
	if err != nil || !dup || !proto.Equal(stored, m) {
		t.Fatalf("resend with new seq: stored=%v dup=%v err=%v, want original", stored, dup, err)
	}
	checkRange(t, ctx, s, conv, 0, 10, []int64{1}, false)

	// Same seq, new msg id but the same client id: still the same message.
	resend.Seq = 1
	if stored, dup, err = s.Append(ctx, resend); err != nil || !dup || !proto.Equal(stored, m) {
		t.Fatalf("resend with same seq: stored=%v dup=%v err=%v, want original", stored, dup, err)
	}

	got, err := s.GetByClientID(ctx, 1, "client-1")
	if err != nil || !proto.Equal(got, m) {
		t.Fatalf("GetByClientID = %v, %v; want %v", got, err, m)
	}
	if _, err := s.GetByClientID(ctx, 1, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetByClientID(missing) err=%v, want ErrNotFound", err)
	}
	if _, err := s.GetByClientID(ctx, 2, "client-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetByClientID(other sender) err=%v, want ErrNotFound", err)
	}

	// The same client id from another sender is another message.
	o := Msg(conv, 3)
	o.Sender, o.ClientMsgId = 2, "client-1"
	mustAppend(t, ctx, s, o)
	// Empty client ids never deduplicate.
	mustAppend(t, ctx, s, Msg(conv, 4))
	mustAppend(t, ctx, s, Msg(conv, 5))
	checkRange(t, ctx, s, conv, 0, 10, []int64{1, 3, 4, 5}, false)
}

func testInvalid(t *testing.T, ctx context.Context, s store.Store) {
	bad := func(mod func(m *protocol.Msg)) *protocol.Msg {
		m := Msg(store.SingleConvID(1, 2), 1)
		mod(m)
		return m
	}
	long := string(make([]byte, store.MaxClientMsgIDLen+1))
	cases := map[string]*protocol.Msg{
		"nil":         nil,
		"empty conv":  bad(func(m *protocol.Msg) { m.ConvId = "" }),
		"bad conv":    bad(func(m *protocol.Msg) { m.ConvId = "x:1" }),
		"unordered":   bad(func(m *protocol.Msg) { m.ConvId = "s:2:1" }),
		"seq 0":       bad(func(m *protocol.Msg) { m.Seq = 0 }),
		"seq < 0":     bad(func(m *protocol.Msg) { m.Seq = -3 }),
		"msg id 0":    bad(func(m *protocol.Msg) { m.MsgId = 0 }),
		"conv type":   bad(func(m *protocol.Msg) { m.ConvType = protocol.ConvType_CONV_TYPE_GROUP }),
		"long client": bad(func(m *protocol.Msg) { m.ClientMsgId = long }),
		"NUL client":  bad(func(m *protocol.Msg) { m.ClientMsgId = "a\x00b" }),
		"utf8 client": bad(func(m *protocol.Msg) { m.ClientMsgId = "\xff\xfe" }),
	}
	for name, m := range cases {
		if _, _, err := s.Append(ctx, m); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Append(%s): err=%v, want ErrInvalid", name, err)
		}
	}
	if _, _, err := s.Range(ctx, "g:0", 0, 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Range(g:0): err=%v, want ErrInvalid", err)
	}
	if _, err := s.MaxSeq(ctx, "bogus"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("MaxSeq(bogus): err=%v, want ErrInvalid", err)
	}
	if _, err := s.GetByClientID(ctx, 1, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("GetByClientID(empty): err=%v, want ErrInvalid", err)
	}
	if err := s.Touch(ctx, []int64{1, 0}, store.GroupConvID(1), 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Touch(user 0): err=%v, want ErrInvalid", err)
	}
	if err := s.Touch(ctx, make([]int64, store.MaxBatch+1), store.GroupConvID(1), 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Touch(too many): err=%v, want ErrInvalid", err)
	}
	if err := s.SetDelivered(ctx, 1, "", store.GroupConvID(1), 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetDelivered(empty device): err=%v, want ErrInvalid", err)
	}
	if err := s.SetDelivered(ctx, 1, "\xff", store.GroupConvID(1), 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetDelivered(bad device): err=%v, want ErrInvalid", err)
	}
	if _, err := s.CreateGroup(ctx, store.Group{Owner: 1, Name: "a\x00"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateGroup(NUL name): err=%v, want ErrInvalid", err)
	}
	if _, err := s.CreateGroup(ctx, store.Group{Owner: 0}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateGroup(owner 0): err=%v, want ErrInvalid", err)
	}
	if _, err := s.CreateGroup(ctx, store.Group{Owner: 1, Name: string(make([]byte, store.MaxGroupNameLen+1))}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateGroup(long name): err=%v, want ErrInvalid", err)
	}
	// Nothing was stored by the rejected calls.
	checkRange(t, ctx, s, store.SingleConvID(1, 2), 0, 10, nil, false)
}

func testMaxSeq(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.GroupConvID(9)
	if n, err := s.MaxSeq(ctx, conv); err != nil || n != 0 {
		t.Fatalf("MaxSeq(empty) = %d, %v; want 0", n, err)
	}
	for _, seq := range []int64{3, 1, 1000, 17} {
		mustAppend(t, ctx, s, Msg(conv, seq))
	}
	if n, err := s.MaxSeq(ctx, conv); err != nil || n != 1000 {
		t.Fatalf("MaxSeq = %d, %v; want 1000", n, err)
	}
	if n, err := s.MaxSeq(ctx, store.GroupConvID(10)); err != nil || n != 0 {
		t.Fatalf("MaxSeq(other) = %d, %v; want 0", n, err)
	}
}

func testAppendBatch(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(4, 5)
	first := Msg(conv, 1)
	first.ClientMsgId = "b-1"
	mustAppend(t, ctx, s, first)

	conflict := Msg(conv, 1)
	conflict.MsgId = 123456
	clientDup := Msg(conv, 9)
	clientDup.ClientMsgId = "b-1"
	inBatchDup := Msg(conv, 3)
	batch := []*protocol.Msg{
		Msg(conv, 2),                 // new
		first,                        // dup of stored
		conflict,                     // conflict
		Msg(conv, 3),                 // new
		nil,                          // invalid
		clientDup,                    // dup by client id
		inBatchDup,                   // dup of an earlier message of this batch
		Msg(store.GroupConvID(1), 1), // new, other conversation
	}
	res, err := s.AppendBatch(ctx, batch)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if len(res) != len(batch) {
		t.Fatalf("AppendBatch returned %d results for %d messages", len(res), len(batch))
	}
	type want struct {
		dup bool
		err error
		seq int64
	}
	wants := []want{{false, nil, 2}, {true, nil, 1}, {false, store.ErrSeqConflict, 0}, {false, nil, 3},
		{false, store.ErrInvalid, 0}, {true, nil, 1}, {true, nil, 3}, {false, nil, 1}}
	for i, w := range wants {
		r := res[i]
		if w.err != nil {
			if !errors.Is(r.Err, w.err) || r.Msg != nil {
				t.Errorf("result %d: %+v, want err %v", i, r, w.err)
			}
			continue
		}
		if r.Err != nil || r.Dup != w.dup || r.Msg.GetSeq() != w.seq {
			t.Errorf("result %d: msg seq %d dup=%v err=%v, want seq %d dup=%v", i, r.Msg.GetSeq(), r.Dup, r.Err, w.seq, w.dup)
		}
	}
	checkRange(t, ctx, s, conv, 0, 10, []int64{1, 2, 3}, false)
	checkRange(t, ctx, s, store.GroupConvID(1), 0, 10, []int64{1}, false)
	if res, err := s.AppendBatch(ctx, nil); err != nil || len(res) != 0 {
		t.Fatalf("AppendBatch(nil) = %v, %v", res, err)
	}
	if _, err := s.AppendBatch(ctx, make([]*protocol.Msg, store.MaxBatch+1)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("AppendBatch(too many): err=%v, want ErrInvalid", err)
	}
}

func testAppendTouch(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(4, 5)
	other := store.SingleConvID(6, 7)
	first := Msg(conv, 1)
	first.ClientMsgId = "t-1"
	mustAppend(t, ctx, s, first)

	conflict := Msg(conv, 1)
	conflict.MsgId = 123456
	badUsers := Msg(other, 9)
	items := []store.AppendItem{
		{Msg: Msg(conv, 2), Users: []int64{4, 5}},              // new
		{Msg: first, Users: []int64{40}},                       // dup: touches nobody
		{Msg: conflict, Users: []int64{41}},                    // conflict: touches nobody
		{Msg: Msg(conv, 3), Users: []int64{4, 5, 4}},           // new, user listed twice
		{Msg: nil, Users: []int64{42}},                         // invalid message
		{Msg: badUsers, Users: []int64{6, 0}},                  // invalid users
		{Msg: Msg(store.GroupConvID(1), 1)},                    // new, no users
		{Msg: Msg(other, 4), Users: []int64{6, 7}},             // new
		{Msg: Msg(other, 2), Users: []int64{6}},                // new, lower seq
		{Msg: Msg(store.GroupConvID(2), 1), Users: []int64{9}}, // new, touches a group member
	}
	res, err := s.AppendTouch(ctx, items)
	if err != nil {
		t.Fatalf("AppendTouch: %v", err)
	}
	if len(res) != len(items) {
		t.Fatalf("AppendTouch returned %d results for %d items", len(res), len(items))
	}
	type want struct {
		dup bool
		err error
		seq int64
	}
	wants := []want{{false, nil, 2}, {true, nil, 1}, {false, store.ErrSeqConflict, 0}, {false, nil, 3},
		{false, store.ErrInvalid, 0}, {false, store.ErrInvalid, 0}, {false, nil, 1}, {false, nil, 4},
		{false, nil, 2}, {false, nil, 1}}
	for i, w := range wants {
		r := res[i]
		if w.err != nil {
			if !errors.Is(r.Err, w.err) || r.Msg != nil {
				t.Errorf("result %d: %+v, want err %v", i, r, w.err)
			}
			continue
		}
		if r.Err != nil || r.Dup != w.dup || r.Msg.GetSeq() != w.seq {
			t.Errorf("result %d: msg seq %d dup=%v err=%v, want seq %d dup=%v", i, r.Msg.GetSeq(), r.Dup, r.Err, w.seq, w.dup)
		}
	}
	checkRange(t, ctx, s, conv, 0, 10, []int64{1, 2, 3}, false)
	checkRange(t, ctx, s, other, 0, 10, []int64{2, 4}, false)
	checkConv(t, ctx, s, 4, conv, 3, 0)
	checkConv(t, ctx, s, 5, conv, 3, 0)
	checkConv(t, ctx, s, 6, other, 4, 0)
	checkConv(t, ctx, s, 7, other, 4, 0)
	checkConv(t, ctx, s, 9, store.GroupConvID(2), 1, 0)
	// A later message of a conversation the users already have moves
	// their LastSeq (with a gap: seq 4 was skipped).
	if res, err := s.AppendTouch(ctx, []store.AppendItem{{Msg: Msg(conv, 5), Users: []int64{4, 5}}}); err != nil || res[0].Err != nil {
		t.Fatalf("AppendTouch(seq 5): %v %+v", err, res)
	}
	checkConv(t, ctx, s, 4, conv, 5, 0)
	checkConv(t, ctx, s, 5, conv, 5, 0)
	for _, u := range []int64{40, 41, 42} {
		if _, err := s.Conversation(ctx, u, conv); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("user %d touched by a message that was not inserted: err=%v", u, err)
		}
	}
	if res, err := s.AppendTouch(ctx, nil); err != nil || len(res) != 0 {
		t.Fatalf("AppendTouch(nil) = %v, %v", res, err)
	}
	if _, err := s.AppendTouch(ctx, make([]store.AppendItem, store.MaxBatch+1)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("AppendTouch(too many): err=%v, want ErrInvalid", err)
	}
	many := []store.AppendItem{{Msg: Msg(conv, 50), Users: make([]int64, store.MaxBatch+1)}}
	if _, err := s.AppendTouch(ctx, many); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("AppendTouch(too many users): err=%v, want ErrInvalid", err)
	}
}

func checkConv(t testing.TB, ctx context.Context, s store.Store, user int64, conv string, last, read int64) {
	t.Helper()
	st, err := s.Conversation(ctx, user, conv)
	if err != nil {
		t.Fatalf("Conversation(%d, %s): %v", user, conv, err)
	}
	if want := (store.ConvState{ConvID: conv, LastSeq: last, ReadSeq: read}); st != want {
		t.Fatalf("Conversation(%d, %s) = %+v, want %+v", user, conv, st, want)
	}
}

func testConvIndex(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(1, 2)
	if _, err := s.Conversation(ctx, 1, conv); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Conversation(missing) err=%v, want ErrNotFound", err)
	}
	if _, err := s.SetRead(ctx, 1, conv, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetRead(missing) err=%v, want ErrNotFound", err)
	}
	if err := s.Touch(ctx, []int64{1, 2, 2}, conv, 5); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	checkConv(t, ctx, s, 1, conv, 5, 0)
	checkConv(t, ctx, s, 2, conv, 5, 0)
	if err := s.Touch(ctx, []int64{2, 1}, conv, 3); err != nil {
		t.Fatalf("Touch lower: %v", err)
	}
	checkConv(t, ctx, s, 1, conv, 5, 0)
	if err := s.Touch(ctx, []int64{1}, conv, 7); err != nil {
		t.Fatalf("Touch higher: %v", err)
	}
	checkConv(t, ctx, s, 1, conv, 7, 0)
	checkConv(t, ctx, s, 2, conv, 5, 0)

	for _, c := range []struct{ set, want int64 }{{3, 3}, {2, 3}, {100, 7}, {6, 7}, {0, 7}} {
		got, err := s.SetRead(ctx, 1, conv, c.set)
		if err != nil || got != c.want {
			t.Fatalf("SetRead(%d) = %d, %v; want %d", c.set, got, err, c.want)
		}
	}
	checkConv(t, ctx, s, 1, conv, 7, 7)
	// Touch keeps the read seq.
	if err := s.Touch(ctx, []int64{1}, conv, 9); err != nil {
		t.Fatal(err)
	}
	checkConv(t, ctx, s, 1, conv, 9, 7)
	if _, err := s.SetRead(ctx, 3, conv, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetRead(other user) err=%v, want ErrNotFound", err)
	}
	if err := s.Touch(ctx, nil, conv, 9); err != nil {
		t.Fatalf("Touch(no users): %v", err)
	}
}

func testSyncPage(t *testing.T, ctx context.Context, s store.Store) {
	conv := store.SingleConvID(1, 2)
	check := func(user, from int64, limit int, want []int64, more bool, maxSeq, read int64) {
		t.Helper()
		p, err := s.SyncPage(ctx, user, conv, from, limit)
		if err != nil {
			t.Fatalf("SyncPage(%d, %d, %d): %v", user, from, limit, err)
		}
		if got := seqs(p.Msgs); !slices.Equal(got, want) || p.More != more || p.MaxSeq != maxSeq || p.ReadSeq != read {
			t.Fatalf("SyncPage(%d, %d, %d) = %v more=%v max=%d read=%d, want %v more=%v max=%d read=%d",
				user, from, limit, got, p.More, p.MaxSeq, p.ReadSeq, want, more, maxSeq, read)
		}
	}
	check(1, 0, 10, nil, false, 0, 0) // nothing stored, no index entry
	for _, seq := range []int64{1, 2, 3, 5, 8} {
		mustAppend(t, ctx, s, Msg(conv, seq))
	}
	if err := s.Touch(ctx, []int64{1}, conv, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRead(ctx, 1, conv, 3); err != nil {
		t.Fatal(err)
	}
	check(1, 1, 2, []int64{2, 3}, true, 8, 3)
	check(1, 3, 10, []int64{5, 8}, false, 8, 3)
	check(2, 0, 0, []int64{1, 2, 3, 5, 8}, false, 8, 0) // user 2 has no index entry
	check(1, 8, 10, nil, false, 8, 3)
	for _, c := range []struct {
		user int64
		conv string
	}{{0, conv}, {1, ""}, {1, "x:1"}} {
		if _, err := s.SyncPage(ctx, c.user, c.conv, 0, 10); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("SyncPage(%d, %q) err=%v, want ErrInvalid", c.user, c.conv, err)
		}
	}
}

func testDelivered(t *testing.T, ctx context.Context, s store.Store) {
	a, b := store.SingleConvID(1, 2), store.GroupConvID(5)
	if m, err := s.Delivered(ctx, 1, "phone"); err != nil || len(m) != 0 {
		t.Fatalf("Delivered(empty) = %v, %v", m, err)
	}
	steps := []struct {
		dev  string
		conv string
		seq  int64
	}{{"phone", a, 4}, {"phone", a, 2}, {"phone", b, 10}, {"web", a, 1}, {"phone", a, 6}, {"web", a, 0}}
	for _, st := range steps {
		if err := s.SetDelivered(ctx, 1, st.dev, st.conv, st.seq); err != nil {
			t.Fatalf("SetDelivered(%+v): %v", st, err)
		}
	}
	check := func(user int64, dev string, want map[string]int64) {
		t.Helper()
		got, err := s.Delivered(ctx, user, dev)
		if err != nil {
			t.Fatalf("Delivered(%d, %s): %v", user, dev, err)
		}
		if len(got) != len(want) {
			t.Fatalf("Delivered(%d, %s) = %v, want %v", user, dev, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("Delivered(%d, %s) = %v, want %v", user, dev, got, want)
			}
		}
	}
	check(1, "phone", map[string]int64{a: 6, b: 10})
	check(1, "web", map[string]int64{a: 1})
	check(2, "phone", map[string]int64{})
}

func testMovedSince(t *testing.T, ctx context.Context, s store.Store) {
	a, b, c := store.GroupConvID(1), store.GroupConvID(2), store.SingleConvID(1, 9)
	for _, st := range []struct {
		conv string
		seq  int64
	}{{a, 5}, {b, 3}, {c, 9}} {
		if err := s.Touch(ctx, []int64{1}, st.conv, st.seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Touch(ctx, []int64{2}, a, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRead(ctx, 1, b, 2); err != nil {
		t.Fatal(err)
	}
	check := func(cursors map[string]int64, want []store.ConvState) {
		t.Helper()
		got, err := s.Conversations(ctx, 1, cursors)
		if err != nil {
			t.Fatalf("Conversations(%v): %v", cursors, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Conversations(%v) = %+v, want %+v", cursors, got, want)
		}
	}
	sa, sb, sc := store.ConvState{ConvID: a, LastSeq: 5}, store.ConvState{ConvID: b, LastSeq: 3, ReadSeq: 2}, store.ConvState{ConvID: c, LastSeq: 9}
	check(nil, []store.ConvState{sa, sb, sc})
	check(map[string]int64{a: 5, b: 1, "g:77": 3}, []store.ConvState{sb, sc})
	check(map[string]int64{a: 5, b: 3, c: 9}, nil)
	check(map[string]int64{a: 6, b: 3, c: 8}, []store.ConvState{sc}) // a cursor ahead is not moved
	if got, err := s.Conversations(ctx, 3, nil); err != nil || len(got) != 0 {
		t.Fatalf("Conversations(unknown user) = %v, %v", got, err)
	}
}

func testLastSeqFollowsMessages(t *testing.T, ctx context.Context, s store.Store) {
	conv, other := store.GroupConvID(40), store.GroupConvID(41)
	// Members join once (Touch with seq 0); messages are not touched per member.
	if err := s.Touch(ctx, []int64{1, 2}, conv, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, []int64{1}, other, 0); err != nil {
		t.Fatal(err)
	}
	checkConv(t, ctx, s, 1, conv, 0, 0)
	if got, err := s.Conversations(ctx, 1, map[string]int64{conv: 0, other: 0}); err != nil || len(got) != 0 {
		t.Fatalf("Conversations before messages = %+v, %v", got, err)
	}
	for _, seq := range []int64{1, 2, 5} {
		mustAppend(t, ctx, s, Msg(conv, seq))
	}
	checkConv(t, ctx, s, 2, conv, 5, 0)
	got, err := s.Conversations(ctx, 1, map[string]int64{conv: 2, other: 0})
	if want := []store.ConvState{{ConvID: conv, LastSeq: 5}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Conversations = %+v, %v; want %+v", got, err, want)
	}
	if got, err := s.Conversations(ctx, 1, map[string]int64{conv: 5, other: 0}); err != nil || len(got) != 0 {
		t.Fatalf("Conversations at the head = %+v, %v", got, err)
	}
	// Read is capped by the stored messages, not by the (zero) touched seq.
	if read, err := s.SetRead(ctx, 2, conv, 4); err != nil || read != 4 {
		t.Fatalf("SetRead(4) = %d, %v", read, err)
	}
	if read, err := s.SetRead(ctx, 2, conv, 99); err != nil || read != 5 {
		t.Fatalf("SetRead(99) = %d, %v; want 5", read, err)
	}
	checkConv(t, ctx, s, 2, conv, 5, 5)
	// A touch above the stored messages still counts (the message may be
	// stored by another replica a moment later).
	if err := s.Touch(ctx, []int64{1}, conv, 7); err != nil {
		t.Fatal(err)
	}
	checkConv(t, ctx, s, 1, conv, 7, 0)
	// Users without an entry see nothing.
	if _, err := s.Conversation(ctx, 3, conv); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Conversation(non-member) err=%v, want ErrNotFound", err)
	}
}

func testGroups(t *testing.T, ctx context.Context, s store.Store) {
	g1, err := s.CreateGroup(ctx, store.Group{Name: "one", Owner: 10})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g2, err := s.CreateGroup(ctx, store.Group{Name: "two", Owner: 11, CreatedAt: 1234})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if g1.ID <= 0 || g2.ID <= 0 || g1.ID == g2.ID {
		t.Fatalf("allocated ids %d, %d", g1.ID, g2.ID)
	}
	if g1.CreatedAt == 0 || g2.CreatedAt != 1234 || g1.Name != "one" || g1.Owner != 10 {
		t.Fatalf("created groups %+v %+v", g1, g2)
	}
	const explicit = 1_000_000
	g3, err := s.CreateGroup(ctx, store.Group{ID: explicit, Name: "three", Owner: 12})
	if err != nil || g3.ID != explicit {
		t.Fatalf("CreateGroup(explicit) = %+v, %v", g3, err)
	}
	if _, err := s.CreateGroup(ctx, store.Group{ID: explicit, Name: "again", Owner: 13}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateGroup(taken id) err=%v, want ErrExists", err)
	}
	if got, err := s.Group(ctx, explicit); err != nil || got != g3 {
		t.Fatalf("Group = %+v, %v; want %+v", got, err, g3)
	}

	if n, err := s.AddMembers(ctx, g1.ID, []int64{30, 20, 20, 10}); err != nil || n != 2 {
		t.Fatalf("AddMembers = %d, %v; want 2", n, err)
	}
	if n, err := s.AddMembers(ctx, g1.ID, []int64{20, 40}); err != nil || n != 1 {
		t.Fatalf("AddMembers again = %d, %v; want 1", n, err)
	}
	if n, err := s.AddMembers(ctx, g2.ID, []int64{20}); err != nil || n != 1 {
		t.Fatalf("AddMembers g2 = %d, %v; want 1", n, err)
	}
	checkMembers := func(g int64, want []int64) {
		t.Helper()
		got, err := s.Members(ctx, g)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Members(%d) = %v, %v; want %v", g, got, err, want)
		}
		if n, err := s.MemberCount(ctx, g); err != nil || n != len(want) {
			t.Fatalf("MemberCount(%d) = %d, %v; want %d", g, n, err, len(want))
		}
	}
	checkMembers(g1.ID, []int64{10, 20, 30, 40})
	checkMembers(g2.ID, []int64{11, 20})
	checkMembers(explicit, []int64{12})

	for _, c := range []struct {
		g, u int64
		want bool
	}{{g1.ID, 20, true}, {g1.ID, 11, false}, {g2.ID, 11, true}, {explicit + 1, 12, false}} {
		if ok, err := s.IsMember(ctx, c.g, c.u); err != nil || ok != c.want {
			t.Fatalf("IsMember(%d, %d) = %v, %v; want %v", c.g, c.u, ok, err, c.want)
		}
	}
	checkGroups := func(u int64, want ...store.Group) {
		t.Helper()
		got, err := s.Groups(ctx, u)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Groups(%d) = %+v, %v; want %+v", u, got, err, want)
		}
	}
	lo, hi := g1, g2
	if lo.ID > hi.ID {
		lo, hi = hi, lo
	}
	checkGroups(20, lo, hi)
	checkGroups(12, g3)
	checkGroups(99)

	if n, err := s.RemoveMembers(ctx, g1.ID, []int64{20, 99, 20}); err != nil || n != 1 {
		t.Fatalf("RemoveMembers = %d, %v; want 1", n, err)
	}
	checkMembers(g1.ID, []int64{10, 30, 40})
	checkGroups(20, g2)
	if ok, err := s.IsMember(ctx, g1.ID, 20); err != nil || ok {
		t.Fatalf("IsMember after remove = %v, %v", ok, err)
	}
	// Removing everyone leaves an empty, existing group.
	if n, err := s.RemoveMembers(ctx, g1.ID, []int64{10, 30, 40}); err != nil || n != 3 {
		t.Fatalf("RemoveMembers(all) = %d, %v; want 3", n, err)
	}
	checkMembers(g1.ID, nil)
}

func testGroupsNotFound(t *testing.T, ctx context.Context, s store.Store) {
	const missing = 424242
	if _, err := s.Group(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Group: err=%v, want ErrNotFound", err)
	}
	if _, err := s.AddMembers(ctx, missing, []int64{1}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddMembers: err=%v, want ErrNotFound", err)
	}
	if _, err := s.RemoveMembers(ctx, missing, []int64{1}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveMembers: err=%v, want ErrNotFound", err)
	}
	if _, err := s.Members(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Members: err=%v, want ErrNotFound", err)
	}
	if _, err := s.MemberCount(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MemberCount: err=%v, want ErrNotFound", err)
	}
	if ok, err := s.IsMember(ctx, missing, 1); err != nil || ok {
		t.Errorf("IsMember = %v, %v; want false, nil", ok, err)
	}
	if _, err := s.Group(ctx, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Group(0): err=%v, want ErrInvalid", err)
	}
}

// testConcurrentAppendTouch runs batches that touch the same users'
// conversations in opposite orders at the same time (a deadlock risk).
func testConcurrentAppendTouch(t *testing.T, ctx context.Context, s store.Store) {
	const (
		workers = 6
		perConv = 120
		batch   = 10
	)
	convs := []string{store.SingleConvID(1, 2), store.SingleConvID(2, 3), store.SingleConvID(1, 3)}
	users := [][]int64{{1, 2}, {3, 2}, {3, 1}}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var items []store.AppendItem
			for seq := int64(w + 1); seq <= perConv; seq += workers {
				for k := range convs {
					if w%2 == 1 {
						k = len(convs) - 1 - k
					}
					items = append(items, store.AppendItem{Msg: Msg(convs[k], seq), Users: users[k]})
				}
				if len(items) < batch && seq+workers <= perConv {
					continue
				}
				res, err := s.AppendTouch(ctx, items)
				if err != nil {
					errs <- fmt.Errorf("AppendTouch: %w", err)
					return
				}
				for i, r := range res {
					if r.Err != nil || r.Dup {
						errs <- fmt.Errorf("AppendTouch item %d (%s, %d): dup=%v err=%v", i, items[i].Msg.GetConvId(), items[i].Msg.GetSeq(), r.Dup, r.Err)
						return
					}
				}
				items = items[:0]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k, conv := range convs {
		if n, err := s.MaxSeq(ctx, conv); err != nil || n != perConv {
			t.Fatalf("MaxSeq(%s) = %d, %v; want %d", conv, n, err, perConv)
		}
		checkRange(t, ctx, s, conv, perConv-2, 10, []int64{perConv - 1, perConv}, false)
		for _, u := range users[k] {
			checkConv(t, ctx, s, u, conv, perConv, 0)
		}
	}
}

func testConcurrentAppend(t *testing.T, ctx context.Context, s store.Store) {
	const (
		workers = 8
		perConv = 200
	)
	convs := []string{store.GroupConvID(1), store.SingleConvID(1, 2), store.SingleConvID(3, 4)}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w appends seqs w+1, w+1+workers, ... to every conversation,
			// so the conversations' seqs arrive interleaved and out of order.
			for seq := int64(w + 1); seq <= perConv; seq += workers {
				for _, conv := range convs {
					if _, dup, err := s.Append(ctx, Msg(conv, seq)); err != nil || dup {
						errs <- fmt.Errorf("Append(%s, %d): dup=%v err=%v", conv, seq, dup, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := make([]int64, perConv)
	for i := range want {
		want[i] = int64(i + 1)
	}
	for _, conv := range convs {
		var got []int64
		from := int64(0)
		for {
			msgs, more, err := s.Range(ctx, conv, from, 64)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, seqs(msgs)...)
			if !more {
				break
			}
			from = msgs[len(msgs)-1].GetSeq()
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: got seqs %v, want 1..%d", conv, got, perConv)
		}
		if n, err := s.MaxSeq(ctx, conv); err != nil || n != perConv {
			t.Fatalf("MaxSeq(%s) = %d, %v", conv, n, err)
		}
	}
}

func testConcurrentDuplicate(t *testing.T, ctx context.Context, s store.Store) {
	const (
		racers = 6
		msgs   = 20
	)
	conv := store.SingleConvID(7, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	inserted := map[int64]int{}
	var firstErr error
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(1); seq <= msgs; seq++ {
				m := Msg(conv, seq)
				m.ClientMsgId = fmt.Sprintf("dup-%d", seq)
				_, dup, err := s.Append(ctx, m)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil && !dup {
					inserted[seq]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	for seq := int64(1); seq <= msgs; seq++ {
		if inserted[seq] != 1 {
			t.Fatalf("seq %d inserted %d times (dup=false), want exactly once", seq, inserted[seq])
		}
	}
}

func testConcurrentTouch(t *testing.T, ctx context.Context, s store.Store) {
	const (
		workers = 6
		steps   = 30
	)
	conv := store.GroupConvID(3)
	users := []int64{5, 4, 3, 2, 1}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range steps {
				u := slices.Clone(users)
				if (w+i)%2 == 0 {
					slices.Reverse(u) // opposite orders must not deadlock
				}
				if err := s.Touch(ctx, u, conv, int64(i*workers+w+1)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, u := range users {
		checkConv(t, ctx, s, u, conv, steps*workers, 0)
	}
}

func testClosed(t *testing.T, ctx context.Context, s store.Store) {
	mustAppend(t, ctx, s, Msg(store.GroupConvID(1), 1))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := s.Append(ctx, Msg(store.GroupConvID(1), 2)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Append after Close: err=%v, want ErrClosed", err)
	}
	if _, _, err := s.Range(ctx, store.GroupConvID(1), 0, 1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Range after Close: err=%v, want ErrClosed", err)
	}
	if _, err := s.Members(ctx, 1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Members after Close: err=%v, want ErrClosed", err)
	}
}
