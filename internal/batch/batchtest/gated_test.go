package batchtest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestGatedBlocksUntilTheGateOpens(t *testing.T) {
	g := NewGated()
	g.Err = errors.New("down")
	type answer struct {
		out []int
		err error
	}
	answers := make(chan answer, 2)
	for _, in := range [][]int{{1, 2}, {3}} {
		go func() { out, err := g.Run(context.Background(), in); answers <- answer{out, err} }()
		<-g.Started
	}
	select {
	case a := <-answers:
		t.Fatalf("answered %v before the gate opened", a.out)
	case <-time.After(10 * time.Millisecond):
	}
	if n := g.NCalls(); n != 2 {
		t.Fatalf("%d calls recorded, want 2", n)
	}
	if m := g.MaxRunning(); m != 2 {
		t.Fatalf("at most %d running, want 2", m)
	}
	close(g.Gate)
	got := [][]int{}
	for range 2 {
		a := <-answers
		if !errors.Is(a.err, g.Err) {
			t.Fatalf("error %v, want %v", a.err, g.Err)
		}
		got = append(got, a.out)
	}
	slices.SortFunc(got, func(a, b []int) int { return len(b) - len(a) })
	if !slices.EqualFunc(got, [][]int{{2, 4}, {6}}, slices.Equal) {
		t.Fatalf("answers %v, want doubled inputs", got)
	}
	if calls := g.Calls(); !slices.EqualFunc(calls, [][]int{{1, 2}, {3}}, slices.Equal) {
		t.Fatalf("calls %v", calls)
	}
	if errs := g.CtxErrs(); len(errs) != 2 || errs[0] != nil || errs[1] != nil {
		t.Fatalf("context errors %v", errs)
	}
}

func TestGatedPanics(t *testing.T) {
	g := NewGated()
	g.Panics = true
	close(g.Gate)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	_, _ = g.Run(context.Background(), []int{1})
}
