package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hubuim/hubuim/internal/backoff"
)

// Registration states, as the metric label and in logs.
const (
	stateRegistered = "registered"
	stateLost       = "lost"
)

// etcdRegistration keeps one key alive. Its run goroutine holds the lease:
// it consumes the KeepAlive channel and, when the channel closes while the
// registration is open (the lease expired or could not be renewed for a
// whole TTL), grants a new lease and puts the latest instance again,
// retrying with backoff until etcd answers.
//
// Lock order: putMu before mu. putMu serialises the writes of the key (an
// Update and a re-registration) so that an older value never overwrites a
// newer one; it is held across the etcd request, but only this
// registration's writers ever wait for it.
type etcdRegistration struct {
	e       *Etcd
	key     string
	service string
	id      string

	ctx    context.Context // done at Close or Etcd.Close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	putMu sync.Mutex

	mu     sync.Mutex
	val    []byte           // latest JSON instance
	lease  clientv3.LeaseID // 0 while lost
	closed bool
}

func newEtcdRegistration(e *Etcd, key string, ins Instance, val []byte, lease clientv3.LeaseID) *etcdRegistration {
	ctx, cancel := context.WithCancel(e.ctx)
	r := &etcdRegistration{
		e: e, key: key, service: ins.Service, id: ins.ID,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		val: val, lease: lease,
	}
	return r
}

func (r *etcdRegistration) run() {
	defer close(r.done)
	state := stateRegistered // counted by Register
	defer func() { r.e.metrics.setState(r.service, state, "") }()
	bo := backoff.New(r.e.cfg.RetryMin, r.e.cfg.RetryMax)
	for {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		if lease != 0 {
			r.keepAlive(lease)
			if r.ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			if r.lease == lease {
				r.lease = 0
			}
			r.mu.Unlock()
			if state != stateLost {
				r.e.metrics.setState(r.service, state, stateLost)
				state = stateLost
				r.e.log.Warn("registration lease lost, re-registering",
					"key", r.key, "lease", int64(lease))
			}
			continue
		}
		if err := r.reregister(); err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.e.metrics.regErrors.WithLabelValues(r.service).Inc()
			if !bo.Wait(r.ctx) {
				return
			}
			continue
		}
		bo.Reset()
		r.e.metrics.reregistrations.WithLabelValues(r.service).Inc()
		r.e.metrics.setState(r.service, state, stateRegistered)
		state = stateRegistered
		r.e.log.Info("re-registered", "key", r.key)
	}
}

// keepAlive renews lease until the KeepAlive channel closes: at ctx done,
// or when the client could not renew the lease for a whole TTL, or when
// the lease is gone on the server.
func (r *etcdRegistration) keepAlive(lease clientv3.LeaseID) {
	ch, err := r.e.cli.KeepAlive(r.ctx, lease)
	if err != nil {
		return
	}
	for range ch {
		// Responses carry nothing we need; only the close matters.
	}
}

// reregister grants a new lease and puts the latest value.
func (r *etcdRegistration) reregister() error {
	r.putMu.Lock()
	defer r.putMu.Unlock()
	r.mu.Lock()
	val := r.val
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.e.cfg.RequestTimeout)
	defer cancel()
	lease, err := r.e.grantAndPut(ctx, r.key, val)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.lease = lease
	r.mu.Unlock()
	return nil
}

// Update records ins as the instance to publish and puts it under the
// current lease. While the lease is lost it returns an error wrapping the
// cause, and the automatic re-registration publishes ins. ins.ID and
// ins.Service must be those registered (or empty, meaning unchanged).
func (r *etcdRegistration) Update(ctx context.Context, ins Instance) error {
	if ins.Service == "" {
		ins.Service = r.service
	}
	if ins.ID == "" {
		ins.ID = r.id
	}
	if ins.Service != r.service || ins.ID != r.id {
		return fmt.Errorf("%w: update of %s/%s names %s/%s", ErrInvalidInstance, r.service, r.id, ins.Service, ins.ID)
	}
	val, err := json.Marshal(ins)
	if err != nil {
		return fmt.Errorf("discovery: encode instance: %w", err)
	}
	r.putMu.Lock()
	defer r.putMu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.val = val
	lease := r.lease
	r.mu.Unlock()
	if lease == 0 {
		return fmt.Errorf("discovery: update %s: %w", r.key, ErrLeaseLost)
	}
	if _, err := r.e.cli.Put(ctx, r.key, string(val), clientv3.WithLease(lease)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// The lease expired on the server before the client noticed:
			// let the run loop re-register now.
			r.mu.Lock()
			if r.lease == lease {
				r.lease = 0
			}
			r.mu.Unlock()
			// The KeepAlive channel closes when the server answers the
			// next renewal with TTL 0, and run re-registers.
		}
		return fmt.Errorf("discovery: update %s: %w", r.key, err)
	}
	return nil
}

// Close stops the keepalive and revokes the lease, which deletes the key.
// If etcd cannot be reached the key expires after the TTL.
func (r *etcdRegistration) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	<-r.done
	r.e.forget(r)

	r.putMu.Lock()
	defer r.putMu.Unlock()
	r.mu.Lock()
	lease := r.lease
	r.lease = 0
	r.mu.Unlock()
	if lease == 0 {
		return nil
	}
	if _, err := r.e.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("discovery: revoke %s: %w", r.key, err)
	}
	return nil
}
