package job

import (
	"time"

	"github.com/hubuim/hubuim/internal/config"
)

// Defaults, see Config.
const (
	// DefaultWorkers is small on purpose: a worker sends what queued up
	// while its previous call was in flight as one PushMsgs (up to
	// PushBatchMax), so a few workers keep up with any rate and each call
	// carries more. With 32, pushes at 5,000/s went to a comet 1.27 per
	// call and the delivery p99 was 23–28 ms; with 4, 2.4–2.7 per call and
	// 17–22 ms (imbench push, distributed, the same cluster alternately).
	DefaultWorkers = 4
	// DefaultQueueSize keeps a comet's total queue (Workers × QueueSize)
	// at 32,768 pushes, as with 32 workers of 1,024.
	DefaultQueueSize       = 8192
	DefaultEnqueueTimeout  = time.Second
	DefaultRoomBatchWindow = 20 * time.Millisecond
	DefaultRoomBatchMax    = 32
	DefaultRoomBatchBytes  = 32 << 10
	DefaultPushBatchMax    = 128
	DefaultPushBatchBytes  = 256 << 10
	DefaultRPCTimeout      = 5 * time.Second
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultMaxRetryBackoff = 5 * time.Second
	DefaultDrainTimeout    = 5 * time.Second
	// DefaultCometGrace outlasts a lapsed etcd lease (a live comet
	// re-registers within about 1.6 s).
	DefaultCometGrace = 5 * time.Second
)

// Config configures a Job. The zero value means every default.
type Config struct {
	// Workers per comet; pushes to one device key always use the same
	// worker, so they reach the comet in order. Default 4.
	Workers int `yaml:"workers"`
	// QueueSize is each worker's queue length. Default 8192.
	QueueSize int `yaml:"queue_size"`
	// EnqueueTimeout is how long a push waits for room in a full comet
	// queue before it is dropped (counted and logged). After one such
	// timeout the queue is "congested" and further pushes to it are dropped
	// at once until it has drained to half, so one slow comet delays the
	// others by at most this much per congestion episode. Default 1s.
	EnqueueTimeout time.Duration `yaml:"enqueue_timeout"`
	// RoomBatchWindow is how long a room's pushes are collected before
	// they are sent as one BroadcastRoom. Default 20ms.
	RoomBatchWindow time.Duration `yaml:"room_batch_window"`
	// RoomBatchMax is the most pushes in one room batch. Default 32.
	RoomBatchMax int `yaml:"room_batch_max"`
	// RoomBatchBytes flushes a room batch once its packed frames reach this
	// size. Default 32 KiB.
	RoomBatchBytes int `yaml:"room_batch_bytes"`
	// PushBatchMax is the most pushes a comet worker sends in one PushMsgs
	// call: it takes whatever is queued for it, up to this many, instead of
	// one PushMsg per push. 1 disables batching. Default 128.
	PushBatchMax int `yaml:"push_batch_max"`
	// PushBatchBytes stops adding to a PushMsgs batch once its bodies and
	// keys reach this size. Default 256 KiB.
	PushBatchBytes int `yaml:"push_batch_bytes"`
	// RPCTimeout bounds one gRPC call to a comet. Default 5s.
	RPCTimeout time.Duration `yaml:"rpc_timeout"`
	// RetryBackoff is the first wait before a failed call to a reachable-
	// in-discovery comet is retried; it doubles up to MaxRetryBackoff.
	// Default 100ms.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxRetryBackoff caps RetryBackoff. Default 5s.
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"`
	// DrainTimeout is how long Close lets comet workers deliver what is
	// queued before the rest is dropped. Default 5s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// CometGrace is how long a comet that left discovery without
	// draining first still gets its pushes (a live comet whose etcd lease
	// lapsed comes back). After it, what is queued for the comet is
	// dropped (comet_removed) and pushes to it are unknown_comet. A comet
	// whose last listing said Draining is removed at once (it leaves
	// discovery after closing its connections). Negative: remove at
	// once. Default 5s.
	CometGrace time.Duration `yaml:"comet_grace"`
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// withDefaults fills in defaults and validates; errors name the field
// under prefix (e.g. "job").
func (c Config) withDefaults(prefix string) (Config, error) {
	setDefault(&c.Workers, DefaultWorkers)
	setDefault(&c.QueueSize, DefaultQueueSize)
	setDefault(&c.EnqueueTimeout, DefaultEnqueueTimeout)
	setDefault(&c.RoomBatchWindow, DefaultRoomBatchWindow)
	setDefault(&c.RoomBatchMax, DefaultRoomBatchMax)
	setDefault(&c.RoomBatchBytes, DefaultRoomBatchBytes)
	setDefault(&c.PushBatchMax, DefaultPushBatchMax)
	setDefault(&c.PushBatchBytes, DefaultPushBatchBytes)
	setDefault(&c.RPCTimeout, DefaultRPCTimeout)
	setDefault(&c.RetryBackoff, DefaultRetryBackoff)
	setDefault(&c.MaxRetryBackoff, DefaultMaxRetryBackoff)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.CometGrace, DefaultCometGrace)
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"workers", int64(c.Workers)}, {"queue_size", int64(c.QueueSize)},
		{"enqueue_timeout", int64(c.EnqueueTimeout)}, {"room_batch_window", int64(c.RoomBatchWindow)},
		{"room_batch_max", int64(c.RoomBatchMax)}, {"room_batch_bytes", int64(c.RoomBatchBytes)},
		{"push_batch_max", int64(c.PushBatchMax)}, {"push_batch_bytes", int64(c.PushBatchBytes)},
		{"rpc_timeout", int64(c.RPCTimeout)}, {"retry_backoff", int64(c.RetryBackoff)},
		{"max_retry_backoff", int64(c.MaxRetryBackoff)}, {"drain_timeout", int64(c.DrainTimeout)},
	} {
		if f.v < 0 {
			return c, config.Errorf(prefix+"."+f.name, "must be positive")
		}
	}
	if c.MaxRetryBackoff < c.RetryBackoff {
		return c, config.Errorf(prefix+".max_retry_backoff", "%s is below retry_backoff %s", c.MaxRetryBackoff, c.RetryBackoff)
	}
	return c, nil
}
