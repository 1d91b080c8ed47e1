package idgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hubuim/hubuim/internal/testenv"
)

const (
	testTTL      = 2 * time.Second // etcd's minimum is about this
	etcdDeadline = 20 * time.Second
)

func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: testenv.EtcdEndpoints(t), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// testPrefix returns a unique prefix and deletes it when the test ends.
func testPrefix(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "/hubuim-test/idgen-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = cli.Delete(ctx, p, clientv3.WithPrefix())
	})
	return p
}

func newEtcdLeaser(t *testing.T, cli *clientv3.Client, prefix string, maxWorkers int64) *EtcdLeaser {
	t.Helper()
	l, err := NewEtcdLeaser(EtcdConfig{Client: cli, Prefix: prefix, TTL: testTTL, MaxWorkers: maxWorkers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Release(ctx)
	})
	return l
}

func TestEtcdLeasersGetDistinctIDs(t *testing.T) {
	cli := etcdClient(t)
	prefix := testPrefix(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), etcdDeadline)
	defer cancel()

	const n = 6
	leasers := make([]*EtcdLeaser, n)
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		leasers[i] = newEtcdLeaser(t, cli, prefix, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], _, errs[i] = leasers[i].Acquire(ctx)
		}()
	}
	wg.Wait()
	held := map[int64]int{}
	var losers []int
	for i := range n {
		switch {
		case errs[i] == nil:
			if _, dup := held[ids[i]]; dup {
				t.Fatalf("worker id %d handed out twice", ids[i])
			}
			held[ids[i]] = i
		case errors.Is(errs[i], ErrNoFreeWorker):
			losers = append(losers, i)
		default:
			t.Fatalf("leaser %d: %v", i, errs[i])
		}
	}
	if len(held) != 4 || len(losers) != 2 {
		t.Fatalf("%d ids held, %d refused; want 4 and 2", len(held), len(losers))
	}
	// Release frees the id for someone else.
	freed := ids[held[2]]
	if err := leasers[held[2]].Release(ctx); err != nil {
		t.Fatal(err)
	}
	got, _, err := leasers[losers[0]].Acquire(ctx)
	if err != nil || got != freed {
		t.Fatalf("after Release: Acquire = %d, %v; want %d", got, err, freed)
	}
	if _, _, err := leasers[losers[0]].Acquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("Acquire while holding: err=%v, want ErrHeld", err)
	}
}

func TestEtcdDeadHolderFreesIDAfterTTL(t *testing.T) {
	cliA := etcdClient(t)
	cliB := etcdClient(t)
	prefix := testPrefix(t, cliB)
	ctx, cancel := context.WithTimeout(context.Background(), etcdDeadline)
	defer cancel()

	a := newEtcdLeaser(t, cliA, prefix, 1)
	b := newEtcdLeaser(t, cliB, prefix, 1)
	id, lostA, err := a.Acquire(ctx)
	if err != nil || id != 0 {
		t.Fatalf("A Acquire = %d, %v", id, err)
	}
	if _, _, err := b.Acquire(ctx); !errors.Is(err, ErrNoFreeWorker) {
		t.Fatalf("B Acquire while A holds: err=%v, want ErrNoFreeWorker", err)
	}
	// A "dies": its connection is gone, it can neither renew nor revoke.
	_ = cliA.Close()
	start := time.Now()
	var lostAt time.Time
	for {
		select {
		case <-lostA:
			if lostAt.IsZero() {
				lostAt = time.Now()
			}
		default:
		}
		id, _, err := b.Acquire(ctx)
		if err == nil {
			if id != 0 {
				t.Fatalf("B got id %d, want 0", id)
			}
			break
		}
		if !errors.Is(err, ErrNoFreeWorker) {
			t.Fatalf("B Acquire: %v", err)
		}
		if time.Since(start) > etcdDeadline {
			t.Fatal("id not freed after the TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	acquiredAt := time.Now()
	select {
	case <-lostA:
		if lostAt.IsZero() {
			lostAt = acquiredAt
		}
	default:
		t.Fatal("B holds the id while A was never told it lost it")
	}
	if lostAt.After(acquiredAt) {
		t.Fatalf("A lost its id %v after B took it", lostAt.Sub(acquiredAt))
	}
	t.Logf("A told at %v, B acquired at %v after A's death", lostAt.Sub(start), acquiredAt.Sub(start))
}

func TestEtcdRevokedLeaseStopsGenerator(t *testing.T) {
	cli := etcdClient(t)
	prefix := testPrefix(t, cli)
	l := newEtcdLeaser(t, cli, prefix, 0)
	g := newGen(t, Config{Leaser: l, RetryInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	waitFor(t, "worker id", etcdDeadline, func() bool { _, ok := g.WorkerID(); return ok })
	first := mustNext(t, g)

	// An operator (or etcd) drops the lease: the generator must notice.
	id, _ := g.WorkerID()
	resp, err := cli.Get(ctx, l.Key(id))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("worker key: %v, %v", resp, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ErrNoWorker after revoke", etcdDeadline, func() bool {
		_, err := g.Next()
		return errors.Is(err, ErrNoWorker)
	})
	waitFor(t, "re-acquired worker id", etcdDeadline, func() bool { _, ok := g.WorkerID(); return ok })
	if second := mustNext(t, g); second <= first {
		t.Fatalf("id after re-acquire %d <= %d", second, first)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Run released the id: the key is gone.
	waitFor(t, "key deleted", etcdDeadline, func() bool {
		r, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	})
}
