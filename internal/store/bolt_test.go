package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/store/storetest"
)

func openBolt(tb testing.TB, dir string) *store.Bolt {
	tb.Helper()
	s, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	if err != nil {
		tb.Fatalf("OpenBolt: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) store.Store { return openBolt(tb, tb.TempDir()) })
}

func TestBoltSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openBolt(t, dir)
	conv := store.SingleConvID(1, 2)
	m := storetest.Msg(conv, 3)
	m.ClientMsgId = "persist"
	if _, _, err := s.Append(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, []int64{1, 2}, conv, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRead(ctx, 1, conv, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivered(ctx, 2, "dev", conv, 3); err != nil {
		t.Fatal(err)
	}
	g, err := s.CreateGroup(ctx, store.Group{Name: "g", Owner: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddMembers(ctx, g.ID, []int64{2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBolt(t, dir)
	msgs, _, err := s.Range(ctx, conv, 0, 10)
	if err != nil || len(msgs) != 1 || !proto.Equal(msgs[0], m) {
		t.Fatalf("after reopen Range = %v, %v", msgs, err)
	}
	if got, err := s.GetByClientID(ctx, 1, "persist"); err != nil || !proto.Equal(got, m) {
		t.Fatalf("after reopen GetByClientID = %v, %v", got, err)
	}
	if st, err := s.Conversation(ctx, 1, conv); err != nil || st.LastSeq != 3 || st.ReadSeq != 2 {
		t.Fatalf("after reopen Conversation = %+v, %v", st, err)
	}
	if d, err := s.Delivered(ctx, 2, "dev"); err != nil || d[conv] != 3 {
		t.Fatalf("after reopen Delivered = %v, %v", d, err)
	}
	if mem, err := s.Members(ctx, g.ID); err != nil || len(mem) != 2 {
		t.Fatalf("after reopen Members = %v, %v", mem, err)
	}
	// Group ids keep increasing across restarts.
	g2, err := s.CreateGroup(ctx, store.Group{Name: "g2", Owner: 1})
	if err != nil || g2.ID <= g.ID {
		t.Fatalf("after reopen CreateGroup = %+v, %v (first was %d)", g2, err, g.ID)
	}
}

func TestBoltLockedByAnotherOpen(t *testing.T) {
	dir := t.TempDir()
	openBolt(t, dir)
	_, err := store.OpenBolt(store.BoltConfig{Dir: dir, LockTimeout: 50e6})
	if err == nil {
		t.Fatal("second OpenBolt of the same directory succeeded")
	}
}

func TestBoltConfig(t *testing.T) {
	if _, err := store.OpenBolt(store.BoltConfig{}); err == nil {
		t.Fatal("OpenBolt without Dir succeeded")
	}
}

func TestBoltMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, _, err := s.Append(ctx, storetest.Msg(store.GroupConvID(1), 1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Append(ctx, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "hubuim_store_op_duration_seconds" {
			found = true
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[1].GetValue() == "append" && m.GetHistogram().GetSampleCount() != 2 {
					t.Fatalf("append duration count = %d, want 2", m.GetHistogram().GetSampleCount())
				}
			}
		}
		// Invalid input is not an error of the store.
		if mf.GetName() != "hubuim_store_op_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Fatalf("errors_total %v = %v, want 0", m.GetLabel(), v)
			}
		}
	}
	if !found {
		t.Fatal("hubuim_store_op_duration_seconds not registered")
	}
}
