package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hubuim/hubuim/internal/backoff"
)

// Watch lists the instances of service and then follows changes. The
// first list is read before Watch returns (an error if etcd does not
// answer within ctx and RequestTimeout) and is the first value on the
// channel. Every later value is the full list after a change, sent
// Coalesce after the first change of a burst, so that a burst gives one
// list; a consumer slower than the changes only gets the latest list.
// While etcd is unreachable nothing is sent, so the consumer keeps the
// last list; on error or compaction the watcher lists again (with
// backoff) and resumes. The channel is closed when ctx is done or the
// Registry is closed.
func (e *Etcd) Watch(ctx context.Context, service string) (<-chan []Instance, error) {
	return e.watch(ctx, service, 0)
}

// watch is Watch; a non-zero fromRev makes the watch start after fromRev
// instead of after the first list (tests use it to force a compaction).
func (e *Etcd) watch(ctx context.Context, service string, fromRev int64) (<-chan []Instance, error) {
	if err := checkName("service", service); err != nil {
		return nil, err
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	w := &etcdWatch{e: e, service: service, prefix: e.servicePrefix(service)}
	lctx, lcancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	err := w.list(lctx)
	lcancel()
	if err != nil {
		e.metrics.watchErrors.WithLabelValues(service).Inc()
		return nil, err
	}
	if fromRev != 0 {
		w.rev = fromRev
	}
	out := make(chan []Instance, 1)
	out <- w.instances()
	w.out = out

	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.ctx, cancel)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		stop()
		cancel()
		return nil, ErrClosed
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		w.run(wctx)
	}()
	return out, nil
}

// etcdWatch is the state of one Watch: the raw values by key as of rev.
type etcdWatch struct {
	e       *Etcd
	service string
	prefix  string
	out     chan []Instance

	kvs map[string]watchEntry // by key
	rev int64
}

// watchEntry is one key's raw value and its decoding, done once per change
// of the key rather than at every list sent.
type watchEntry struct {
	val []byte
	ins Instance
	err error
}

// list replaces the state with a fresh read of the prefix.
func (w *etcdWatch) list(ctx context.Context) error {
	resp, err := w.e.cli.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("discovery: etcd list %s: %w", w.prefix, err)
	}
	kvs := make(map[string]watchEntry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		if old, ok := w.kvs[key]; ok && bytes.Equal(old.val, kv.Value) {
			kvs[key] = old
			continue
		}
		kvs[key] = w.decode(key, kv.Value)
	}
	w.kvs = kvs
	w.rev = resp.Header.Revision
	return nil
}

// decode decodes the value of key. An undecodable value is counted as a
// watch error and logged (once per change of the key).
func (w *etcdWatch) decode(key string, val []byte) watchEntry {
	ins, err := decodeInstance(val)
	if err != nil {
		w.e.metrics.watchErrors.WithLabelValues(w.service).Inc()
		w.e.log.Warn("skipping undecodable instance", "key", key, "err", err)
		return watchEntry{val: val, err: err}
	}
	if ins.ID == "" {
		ins.ID = strings.TrimPrefix(key, w.prefix)
	}
	if ins.Service == "" {
		ins.Service = w.service
	}
	return watchEntry{val: val, ins: ins}
}

// instances returns the decoded state as a list sorted by ID; each list
// is the receiver's own copy.
func (w *etcdWatch) instances() []Instance {
	list := make([]Instance, 0, len(w.kvs))
	for _, ent := range w.kvs {
		if ent.err == nil {
			list = append(list, cloneInstance(ent.ins))
		}
	}
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return list
}

// maxInstanceBytes bounds the size of a value decoded as an Instance.
const maxInstanceBytes = 64 << 10

// decodeInstance decodes one registered value.
func decodeInstance(val []byte) (Instance, error) {
	var ins Instance
	if len(val) > maxInstanceBytes {
		return ins, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrInvalidInstance, len(val), maxInstanceBytes)
	}
	if err := json.Unmarshal(val, &ins); err != nil {
		return ins, fmt.Errorf("%w: %v", ErrInvalidInstance, err)
	}
	return ins, nil
}

// send hands list to the consumer, replacing a list it has not taken yet,
// so that it never blocks. Only this watch's goroutine sends.
func (w *etcdWatch) send(list []Instance) {
	select {
	case w.out <- list:
		return
	default:
	}
	select {
	case <-w.out:
	default:
	}
	w.out <- list
}

func (w *etcdWatch) run(ctx context.Context) {
	bo := backoff.New(w.e.cfg.RetryMin, w.e.cfg.RetryMax)
	// Since Go 1.23 a stopped timer never delivers a stale value.
	coalesce := time.NewTimer(time.Hour)
	coalesce.Stop()
	pending := false // a change waits for the coalesce timer
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := w.e.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1))
		broken := w.follow(ctx, wch, coalesce, &pending)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if broken != nil {
			w.e.metrics.watchErrors.WithLabelValues(w.service).Inc()
			w.e.log.Warn("watch broken, listing again", "prefix", w.prefix, "err", broken)
		}
		// List again until etcd answers; the consumer keeps its list.
		for {
			if !bo.Wait(ctx) {
				return
			}
			old := w.kvs
			lctx, lcancel := context.WithTimeout(ctx, w.e.cfg.RequestTimeout)
			err := w.list(lctx)
			lcancel()
			if err == nil {
				if !sameValues(old, w.kvs) {
					pending = true
					coalesce.Reset(w.e.cfg.Coalesce)
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			w.e.metrics.watchErrors.WithLabelValues(w.service).Inc()
		}
		bo.Reset()
	}
}

// follow applies watch responses to the state and sends coalesced lists
// until the watch channel closes or fails; it returns why.
func (w *etcdWatch) follow(ctx context.Context, wch clientv3.WatchChan, coalesce *time.Timer, pending *bool) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-coalesce.C:
			*pending = false
			w.send(w.instances())
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch channel closed")
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("watch compacted at revision %d", resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				return err
			}
			if resp.Canceled {
				return fmt.Errorf("watch canceled")
			}
			changed := false
			for _, ev := range resp.Events {
				key := string(ev.Kv.Key)
				switch ev.Type {
				case clientv3.EventTypePut:
					w.kvs[key] = w.decode(key, ev.Kv.Value)
				case clientv3.EventTypeDelete:
					delete(w.kvs, key)
				}
				changed = true
			}
			if resp.Header.Revision > w.rev {
				w.rev = resp.Header.Revision
			}
			if changed && !*pending {
				*pending = true
				coalesce.Reset(w.e.cfg.Coalesce)
			}
		}
	}
}

func sameValues(a, b map[string]watchEntry) bool {
	return maps.EqualFunc(a, b, func(x, y watchEntry) bool { return bytes.Equal(x.val, y.val) })
}
