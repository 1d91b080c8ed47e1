package im

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/store"
)

// memberCountingBolt is a bolt store that counts its membership queries.
type memberCountingBolt struct {
	*store.Bolt
	isMember, members atomic.Int64
}

func (s *memberCountingBolt) IsMember(ctx context.Context, groupID, userID int64) (bool, error) {
	s.isMember.Add(1)
	return s.Bolt.IsMember(ctx, groupID, userID)
}

func (s *memberCountingBolt) Members(ctx context.Context, groupID int64) ([]int64, error) {
	s.members.Add(1)
	return s.Bolt.Members(ctx, groupID)
}

func (s *memberCountingBolt) queries() int64 { return s.isMember.Load() + s.members.Load() }

// newMemberHarness is a Service and Groups over a counting bolt store
// holding group 5 (owner 1, members 1, 2, 3).
func newMemberHarness(tb testing.TB, cfg Config) (*Service, *Groups, *memberCountingBolt) {
	tb.Helper()
	bolt, err := store.OpenBolt(store.BoltConfig{Dir: tb.TempDir(), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bolt.Close() })
	st := &memberCountingBolt{Bolt: bolt}
	seq, err := NewSeqAllocator(NewMemorySeqCounter(), st, SeqAllocatorConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := NewService(cfg, Deps{Seq: seq, Dedup: NewMemoryDedup(0, 0), Store: st, IDs: &counterIDs{}, Producer: &recordingProducer{}})
	if err != nil {
		tb.Fatal(err)
	}
	groups, err := NewGroups(st, svc)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := groups.Create(context.Background(), trustedActor, 5, "g", 1, []int64{2, 3}); err != nil {
		tb.Fatal(err)
	}
	return svc, groups, st
}

var cmidSeq atomic.Int64

func sendGroup(tb testing.TB, svc *Service, sender, group int64) protocol.Status {
	tb.Helper()
	req := &protocol.MsgSend{ClientMsgId: "m" + strconv.FormatInt(cmidSeq.Add(1), 10), ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: group, Payload: []byte("x")}
	return svc.Send(context.Background(), sender, "d", req).Status
}

func syncGroup(svc *Service, user, group int64) protocol.Status {
	return svc.Sync(context.Background(), user, &protocol.Sync{ConvId: store.GroupConvID(group)}).Status
}

func TestMemberCacheHitsDoNotQueryTheStore(t *testing.T) {
	svc, _, st := newMemberHarness(t, Config{MemberCache: members.Config{TTL: time.Hour}})
	before := st.queries()
	for i := 0; i < 10; i++ {
		for _, u := range []int64{1, 2, 3} {
			if got := sendGroup(t, svc, u, 5); got != protocol.Status_STATUS_OK {
				t.Fatalf("send from member %d: %v", u, got)
			}
		}
		if got := syncGroup(svc, 2, 5); got != protocol.Status_STATUS_OK {
			t.Fatalf("sync: %v", got)
		}
	}
	if n := st.queries() - before; n != 1 {
		t.Fatalf("%d membership queries for 40 group sends and syncs, want 1 (one load)", n)
	}
}

func TestMemberCacheRemovalThroughThisProcessIsImmediate(t *testing.T) {
	svc, groups, _ := newMemberHarness(t, Config{MemberCache: members.Config{TTL: time.Hour}})
	ctx := context.Background()
	if got := sendGroup(t, svc, 3, 5); got != protocol.Status_STATUS_OK {
		t.Fatalf("send: %v", got)
	}
	if _, err := groups.RemoveMembers(ctx, 1, 5, []int64{3}); err != nil { // the owner removes 3
		t.Fatal(err)
	}
	if got := sendGroup(t, svc, 3, 5); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("send after removal: %v, want FORBIDDEN", got)
	}
	if got := syncGroup(svc, 3, 5); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("sync after removal: %v, want FORBIDDEN", got)
	}
	// Leaving is a removal too.
	if got := syncGroup(svc, 2, 5); got != protocol.Status_STATUS_OK {
		t.Fatalf("sync: %v", got)
	}
	if _, err := groups.RemoveMembers(ctx, 2, 5, []int64{2}); err != nil {
		t.Fatal(err)
	}
	if got := syncGroup(svc, 2, 5); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("sync after leaving: %v, want FORBIDDEN", got)
	}
	// Adding back through this process is seen at once too.
	if _, err := groups.AddMembers(ctx, trustedActor, 5, []int64{3}); err != nil {
		t.Fatal(err)
	}
	if got := sendGroup(t, svc, 3, 5); got != protocol.Status_STATUS_OK {
		t.Fatalf("send after re-adding: %v", got)
	}
}

// Changes made through another logic replica (here: the store directly):
// an added member is accepted at once, a removed one is refused at the
// latest after the TTL.
func TestMemberCacheChangesThroughAnotherReplica(t *testing.T) {
	const ttl = 100 * time.Millisecond
	svc, _, st := newMemberHarness(t, Config{MemberCache: members.Config{TTL: ttl}})
	ctx := context.Background()
	if got := sendGroup(t, svc, 2, 5); got != protocol.Status_STATUS_OK {
		t.Fatalf("send: %v", got)
	}
	if _, err := st.Bolt.AddMembers(ctx, 5, []int64{9}); err != nil {
		t.Fatal(err)
	}
	if got := sendGroup(t, svc, 9, 5); got != protocol.Status_STATUS_OK {
		t.Fatalf("send from a member added elsewhere: %v, want OK at once", got)
	}
	if _, err := st.Bolt.RemoveMembers(ctx, 5, []int64{2}); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	for sendGroup(t, svc, 2, 5) == protocol.Status_STATUS_OK {
		if time.Since(removed) > 10*ttl {
			t.Fatalf("a member removed elsewhere still sends after %v (ttl %v)", time.Since(removed), ttl)
		}
		time.Sleep(ttl / 10)
	}
	if got := syncGroup(svc, 2, 5); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("sync after removal: %v, want FORBIDDEN", got)
	}
	if got := sendGroup(t, svc, 2, 404); got != protocol.Status_STATUS_NOT_FOUND {
		t.Fatalf("send to an unknown group: %v, want NOT_FOUND", got)
	}
}

// A negative TTL keeps the behaviour without a cache: one IsMember per
// check, and a removal anywhere is seen at once.
func TestMemberCacheDisabled(t *testing.T) {
	svc, _, st := newMemberHarness(t, Config{MemberCache: members.Config{TTL: -1}})
	if svc.MemberCache() != nil {
		t.Fatal("a negative ttl must disable the cache")
	}
	for i := 0; i < 3; i++ {
		if got := sendGroup(t, svc, 2, 5); got != protocol.Status_STATUS_OK {
			t.Fatalf("send: %v", got)
		}
	}
	if n, m := st.isMember.Load(), st.members.Load(); n != 3 || m != 0 {
		t.Fatalf("%d IsMember and %d Members queries for 3 sends, want 3 and 0", n, m)
	}
	if _, err := st.Bolt.RemoveMembers(context.Background(), 5, []int64{2}); err != nil {
		t.Fatal(err)
	}
	if got := sendGroup(t, svc, 2, 5); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("send after removal: %v, want FORBIDDEN at once", got)
	}
}

func TestMemberCacheConfigValidated(t *testing.T) {
	h := newHarness(t, Config{})
	_, err := NewService(Config{MemberCache: members.Config{MaxGroups: -1}}, h.svc.deps)
	if err == nil {
		t.Fatal("a negative member_cache.max_groups must be refused")
	}
	if _, err := NewFanout(FanoutConfig{MemberCache: members.Config{MaxMembers: -1}}, FanoutDeps{Devices: fakeDevices{}, Members: fakeMembers{}, Dispatcher: &recordingDispatcher{}}); err == nil {
		t.Fatal("a negative fanout.member_cache.max_members must be refused")
	}
}

// countingMembers counts the member lookups of a fan-out.
type countingMembers struct {
	fakeMembers
	n atomic.Int64
}

func (c *countingMembers) Members(ctx context.Context, g int64) ([]int64, error) {
	c.n.Add(1)
	return c.fakeMembers.Members(ctx, g)
}

func TestFanoutMemberCache(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   members.Config
		loads int64
	}{
		{"cached", members.Config{}, 1},
		{"disabled", members.Config{TTL: -1}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lister := &countingMembers{fakeMembers: fakeMembers{7: {1, 2, 3}}}
			d := &recordingDispatcher{}
			f, err := NewFanout(FanoutConfig{MemberCache: tc.cfg}, FanoutDeps{Devices: fakeDevices{2: {{Key: "b", Server: "c1"}}}, Members: lister, Dispatcher: d})
			if err != nil {
				t.Fatal(err)
			}
			for seq := int64(1); seq <= 3; seq++ {
				msg := &protocol.Msg{ConvId: store.GroupConvID(7), Seq: seq, Sender: 1, ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: 7}
				if err := f.Handle(context.Background(), msgEvent(t, &logicpb.MsgEvent{Msg: msg})); err != nil {
					t.Fatal(err)
				}
			}
			if n := lister.n.Load(); n != tc.loads {
				t.Fatalf("%d member lookups for 3 messages, want %d", n, tc.loads)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if len(d.pushes) != 3 {
				t.Fatalf("%d pushes, want 3", len(d.pushes))
			}
		})
	}
}

// A fan-out given a members.Cache uses it as is (shared with the IM
// service of the same process), so logic's invalidations reach it.
func TestFanoutSharesAGivenCache(t *testing.T) {
	svc, groups, _ := newMemberHarness(t, Config{MemberCache: members.Config{TTL: time.Hour}})
	f, err := NewFanout(FanoutConfig{}, FanoutDeps{Devices: fakeDevices{}, Members: svc.MemberCache(), Dispatcher: &recordingDispatcher{}})
	if err != nil {
		t.Fatal(err)
	}
	if f.deps.Members != MemberLister(svc.MemberCache()) {
		t.Fatal("the given cache was wrapped")
	}
	ctx := context.Background()
	if m, _ := f.deps.Members.Members(ctx, 5); len(m) != 3 {
		t.Fatalf("members %v", m)
	}
	if _, err := groups.AddMembers(ctx, 1, 5, []int64{8}); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.deps.Members.Members(ctx, 5); len(m) != 4 {
		t.Fatalf("members after an add through logic: %v, want 4", m)
	}
}

// recordingMemberEvents records the published groups; fail makes Publish
// fail.
type recordingMemberEvents struct {
	groups []int64
	fail   bool
}

func (r *recordingMemberEvents) Publish(_ context.Context, groupID int64) error {
	r.groups = append(r.groups, groupID)
	if r.fail {
		return errors.New("redis down")
	}
	return nil
}

// TestMembershipChangesArePublished: create with members, add, remove and
// leave each publish the group for the other processes; a failed publish
// does not fail the change.
func TestMembershipChangesArePublished(t *testing.T) {
	ev := &recordingMemberEvents{}
	bolt, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	seq, err := NewSeqAllocator(NewMemorySeqCounter(), bolt, SeqAllocatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(Config{}, Deps{Seq: seq, Dedup: NewMemoryDedup(0, 0), Store: bolt, IDs: &counterIDs{}, Producer: &recordingProducer{}, MemberEvents: ev})
	if err != nil {
		t.Fatal(err)
	}
	groups, err := NewGroups(bolt, svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := groups.Create(ctx, trustedActor, 7, "g", 1, []int64{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := groups.AddMembers(ctx, 1, 7, []int64{3, 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := groups.RemoveMembers(ctx, 1, 7, []int64{3}); err != nil {
		t.Fatal(err)
	}
	ev.fail = true
	if _, err := groups.RemoveMembers(ctx, 4, 7, []int64{4}); err != nil { // 4 leaves
		t.Fatalf("leave with the events down: %v", err)
	}
	if want := []int64{7, 7, 7, 7}; !slices.Equal(ev.groups, want) {
		t.Fatalf("published %v, want %v", ev.groups, want)
	}
	if got := sendGroup(t, svc, 4, 7); got != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("send after leaving: %v, want FORBIDDEN (here at once)", got)
	}
}
