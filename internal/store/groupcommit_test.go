package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestGroupCommitIsolatesFailures(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "gc.db"), boltFileMode, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	gc := &groupCommit{db: db, maxBatch: 4}
	errBad := errors.New("bad write")
	const callers = 64
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = gc.do(func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
					return err
				}
				if i%5 == 0 {
					return errBad // rolls back this call's Put only
				}
				return nil
			})
		}()
	}
	wg.Wait()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range callers {
			got := b.Get(fmt.Appendf(nil, "k%03d", i)) != nil
			switch {
			case i%5 == 0 && (!errors.Is(errs[i], errBad) || got):
				return fmt.Errorf("failing call %d: err=%v stored=%v", i, errs[i], got)
			case i%5 != 0 && (errs[i] != nil || !got):
				return fmt.Errorf("call %d: err=%v stored=%v", i, errs[i], got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if gc.running || len(gc.queue) != 0 {
		t.Fatalf("group commit left running=%v queue=%d", gc.running, len(gc.queue))
	}
}
