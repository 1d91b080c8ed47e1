package store

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit runs write functions in shared bbolt transactions without
// waiting for a timer (bbolt's own Batch waits MaxBatchDelay even for a lone
// writer). The first caller commits at once; callers arriving meanwhile
// queue up, and when the commit ends the first of them leads the next
// transaction for the whole queue. Under load one fsync serves many writes;
// a lone writer pays no extra latency. No goroutine is started: callers do
// the work.
type groupCommit struct {
	db       *bolt.DB
	maxBatch int

	mu      sync.Mutex
	running bool // a leader is committing
	queue   []*gcCall
}

type gcCall struct {
	fn   func(*bolt.Tx) error
	done chan error // receives the result, or errLead
}

// errLead tells a queued caller that it now leads the next transaction.
var errLead = errors.New("store: lead the next group commit")

// do runs fn in a write transaction shared with concurrent callers. fn may
// run more than once (a failed shared transaction is retried call by call)
// and must reset its outputs at its start.
func (g *groupCommit) do(fn func(*bolt.Tx) error) error {
	c := &gcCall{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if g.running {
		g.mu.Unlock()
		if err := <-c.done; !errors.Is(err, errLead) {
			return err
		}
		g.mu.Lock()
	}
	g.running = true
	n := min(len(g.queue), g.maxBatch)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()

	var own error
	for i, r := range g.commit(batch) {
		if batch[i] == c {
			own = r
		} else {
			batch[i].done <- r
		}
	}

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- errLead // g.running stays true: leadership moves
	} else {
		g.running = false
		g.queue = nil
	}
	g.mu.Unlock()
	return own
}

// commit runs the batch in one transaction; if that fails, each call runs
// alone so that one failing call does not fail the others.
func (g *groupCommit) commit(batch []*gcCall) []error {
	res := make([]error, len(batch))
	err := g.db.Update(func(tx *bolt.Tx) error {
		for _, c := range batch {
			if err := c.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(batch) == 1 {
		for i := range res {
			res[i] = err
		}
		return res
	}
	for i, c := range batch {
		res[i] = g.db.Update(c.fn)
	}
	return res
}
