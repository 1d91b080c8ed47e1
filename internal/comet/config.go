package comet

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/config"
)

// EnvPrefix prefixes environment overrides of Config (HUBUIM_COMET_TCP_ADDR).
const EnvPrefix = "HUBUIM_COMET"

// Defaults filled in by New for zero Config fields.
const (
	DefaultBuckets              = 32
	DefaultRoomWorkers          = 2
	DefaultRoomQueue            = 1024
	DefaultTimerWheels          = 8
	DefaultTimerTick            = 100 * time.Millisecond
	DefaultHandshakeTimeout     = 5 * time.Second
	DefaultHeartbeatInterval    = 30 * time.Second
	DefaultHeartbeatMissed      = 3
	DefaultLogicHeartbeat       = 60 * time.Second
	DefaultLogicTimeout         = 5 * time.Second
	DefaultMaxBody              = protocol.DefaultMaxBody
	DefaultMaxQueueBytes        = 1 << 20
	DefaultWriteTimeout         = 10 * time.Second
	DefaultKickWriteTimeout     = time.Second
	DefaultOnlineInterval       = 10 * time.Second
	DefaultDrainParallelism     = 256
	DefaultDrainSpread          = 10 * time.Second
	DefaultDrainTimeout         = 30 * time.Second
	DefaultWSReadBufferSize     = 128
	DefaultWSWriteBufferSize    = 4096
	DefaultMaxAccepts           = 64
	DefaultBroadcastBatchPeriod = 10 * time.Millisecond
	DefaultTCPPollers           = 1
	// DefaultDeepWorkers bounds the deep-stack workers: enough for the
	// logic calls in flight at once, which is the message rate times
	// logic's latency, not a number of CPUs (imbench chat's 225
	// closed-loop senders keep ~225 Receive calls in flight). Workers
	// start on demand, so an idle comet holds none.
	DefaultDeepWorkers = 1024
	// DefaultLogicStreams: a few streams, so that one slow reply does not
	// hold the replies queued behind it on the same HTTP/2 connection
	// window, and so that they spread over logic replicas.
	DefaultLogicStreams = 4
)

// Config configures a comet. The zero value of every field means its
// default, except the listener addresses: an empty address disables that
// listener (DefaultConfig sets goim's ports).
type Config struct {
	// ID is this comet's id, sent to logic as "server". Default: hostname.
	ID string `yaml:"id"`

	// TCPAddr is the plain TCP listener. Empty disables it. DefaultConfig: ":3101".
	TCPAddr string `yaml:"tcp_addr"`
	// WSAddr is the WebSocket listener (path /sub). Empty disables it. DefaultConfig: ":3102".
	WSAddr string `yaml:"ws_addr"`
	// WSSAddr is the WebSocket+TLS listener. Empty disables it. DefaultConfig: "" (needs a certificate).
	WSSAddr string `yaml:"wss_addr"`
	// TCPTLSAddr is the TCP+TLS listener. Empty disables it. DefaultConfig: "" (needs a certificate).
	TCPTLSAddr string `yaml:"tcp_tls_addr"`
	// GRPCAddr serves the comet gRPC API for job and logic. Empty disables it. DefaultConfig: ":3109".
	GRPCAddr string `yaml:"grpc_addr"`
	// TLSCertFile and TLSKeyFile are the PEM certificate and key of the TLS
	// listeners. Required when WSSAddr or TCPTLSAddr is set.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`

	// LogicTarget is the gRPC target of logic, passed to grpc.NewClient by
	// cmd/comet ("127.0.0.1:3119", or "hubuim:///logic" with the discovery
	// resolver). Default "127.0.0.1:3119".
	LogicTarget string `yaml:"logic_target"`
	// LogicTimeout bounds every call to logic. Default 5s.
	LogicTimeout time.Duration `yaml:"logic_timeout"`

	// Buckets is the number of connection shards, a power of two. Default 32.
	Buckets int `yaml:"buckets"`
	// RoomWorkers is the number of room-broadcast workers per bucket; a
	// room always maps to the same worker so its messages stay in order.
	// Default 2.
	RoomWorkers int `yaml:"room_workers"`
	// RoomQueue is each room worker's queue length. A broadcast that finds
	// the queue full in every bucket holding the room fails (the caller
	// retries); in only some, those buckets miss it and it is counted in
	// hubuim_comet_room_queue_full_total (a retry would deliver it again
	// to the others). Default 1024.
	RoomQueue int `yaml:"room_queue"`

	// TCPPollers is the number of epoll poller goroutines watching idle
	// plain-TCP connections, which then have no goroutine of their own
	// (Linux only; elsewhere, and for TLS and WebSocket, every connection
	// keeps a reader goroutine). Default 1.
	TCPPollers int `yaml:"tcp_pollers"`
	// DisableTCPPoller keeps a reader goroutine per plain-TCP connection
	// (the other platforms' behaviour). Default false.
	DisableTCPPoller bool `yaml:"disable_tcp_poller"`

	// DeepWorkers bounds the long-lived goroutines that make the readers'
	// logic calls and WebSocket frame reads (deep stacks) so that an idle
	// reader's stack stays at 2 KB and a call finds a stack already grown.
	// They start on demand and stop at Shutdown; a call finding none idle
	// with DeepWorkers running uses a short-lived goroutine. Size it for
	// the logic calls in flight at once (closed-loop senders waiting for
	// their ACK). Default 1024.
	DeepWorkers int `yaml:"deep_workers"`

	// LogicStreams is how many long-lived ReceiveStreams carry the client
	// frames logic handles (sends, syncs, receipts), round robin, instead
	// of a unary Receive per frame; a logic without ReceiveStream gets
	// unary calls. Negative: unary calls only. Default 4.
	LogicStreams int `yaml:"logic_streams"`

	// TimerWheels is the number of timing wheels holding handshake and
	// heartbeat deadlines (one goroutine each). Default 8.
	TimerWheels int `yaml:"timer_wheels"`
	// TimerTick is the wheels' resolution. Default 100ms.
	TimerTick time.Duration `yaml:"timer_tick"`

	// HandshakeTimeout is how long a new connection has to send Auth
	// (and, for WebSocket, the HTTP upgrade). Default 5s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// HeartbeatInterval is the client heartbeat interval when logic's
	// ConnectReply.heartbeat_ms is 0. Default 30s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// HeartbeatMissed is how many intervals may pass without a heartbeat
	// before the connection is closed. Default 3.
	HeartbeatMissed int `yaml:"heartbeat_missed"`
	// LogicHeartbeat is the minimum time between two logic Heartbeat calls
	// for one connection (renewing its session TTL); client heartbeats in
	// between are answered locally. Logic's session TTL must be longer.
	// Default 60s.
	LogicHeartbeat time.Duration `yaml:"logic_heartbeat"`
	// OnlineInterval is how often room counts are sent to logic
	// (RenewOnline). Default 10s.
	OnlineInterval time.Duration `yaml:"online_interval"`

	// MaxBody is the largest accepted client frame body. Default 16 KiB.
	MaxBody int `yaml:"max_body"`
	// MaxQueueBytes bounds the bytes queued for one connection; beyond it
	// the connection gets Kick(SLOW_CONSUMER) and is closed. Default 1 MiB.
	MaxQueueBytes int `yaml:"max_queue_bytes"`
	// MaxAccepts bounds the accepted ops of one connection. Default 64.
	MaxAccepts int `yaml:"max_accepts"`
	// WriteTimeout bounds one coalesced write. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// KickWriteTimeout bounds writing the final Kick or DisconnectReply
	// before a close. Default 1s.
	KickWriteTimeout time.Duration `yaml:"kick_write_timeout"`

	// WSReadBufferSize and WSWriteBufferSize are gorilla/websocket's I/O
	// buffers. The read buffer stays with the connection (reads of a body
	// larger than it bypass it); write buffers are pooled and held only
	// while writing. Defaults 128 and 4096.
	WSReadBufferSize  int `yaml:"ws_read_buffer_size"`
	WSWriteBufferSize int `yaml:"ws_write_buffer_size"`

	// DrainParallelism bounds how many connections Shutdown kicks and
	// disconnects at once. Default 256.
	DrainParallelism int `yaml:"drain_parallelism"`
	// DrainTimeout is the Shutdown deadline Run uses. Default 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// DrainSpread spreads Shutdown's kicks evenly over this period, so
	// that the clients of a draining comet do not all reconnect at once.
	// Default 10s, at most half of DrainTimeout; negative: kick as fast
	// as DrainParallelism allows.
	DrainSpread time.Duration `yaml:"drain_spread"`
}

// DefaultConfig returns the configuration cmd/comet starts from: goim's
// ports for TCP, WebSocket and gRPC; TLS listeners off.
func DefaultConfig() Config {
	return Config{
		TCPAddr:  ":3101",
		WSAddr:   ":3102",
		GRPCAddr: ":3109",
	}
}

// LoadConfig reads path (may be empty) over DefaultConfig and applies
// HUBUIM_COMET_* environment overrides.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := config.Load(path, EnvPrefix, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, cfg.withDefaults()
}

func defDur(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

func defInt(i *int, v int) {
	if *i == 0 {
		*i = v
	}
}

// withDefaults fills zero fields and validates.
func (c *Config) withDefaults() error {
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "comet"
		}
		c.ID = h
	}
	if c.LogicTarget == "" {
		c.LogicTarget = "127.0.0.1:3119"
	}
	defDur(&c.LogicTimeout, DefaultLogicTimeout)
	defInt(&c.Buckets, DefaultBuckets)
	defInt(&c.RoomWorkers, DefaultRoomWorkers)
	defInt(&c.RoomQueue, DefaultRoomQueue)
	defInt(&c.TimerWheels, DefaultTimerWheels)
	defInt(&c.TCPPollers, DefaultTCPPollers)
	defInt(&c.DeepWorkers, DefaultDeepWorkers)
	defInt(&c.LogicStreams, DefaultLogicStreams)
	defDur(&c.TimerTick, DefaultTimerTick)
	defDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	defDur(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	defInt(&c.HeartbeatMissed, DefaultHeartbeatMissed)
	defDur(&c.LogicHeartbeat, DefaultLogicHeartbeat)
	defDur(&c.OnlineInterval, DefaultOnlineInterval)
	defInt(&c.MaxBody, DefaultMaxBody)
	defInt(&c.MaxQueueBytes, DefaultMaxQueueBytes)
	defInt(&c.MaxAccepts, DefaultMaxAccepts)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	defDur(&c.KickWriteTimeout, DefaultKickWriteTimeout)
	defInt(&c.WSReadBufferSize, DefaultWSReadBufferSize)
	defInt(&c.WSWriteBufferSize, DefaultWSWriteBufferSize)
	defInt(&c.DrainParallelism, DefaultDrainParallelism)
	defDur(&c.DrainTimeout, DefaultDrainTimeout)
	switch {
	case c.DrainSpread == 0:
		c.DrainSpread = min(DefaultDrainSpread, c.DrainTimeout/2)
	case c.DrainSpread < 0:
		c.DrainSpread = 0
	}

	var errs []error
	if c.Buckets < 0 || c.Buckets&(c.Buckets-1) != 0 {
		errs = append(errs, config.Errorf("buckets", "must be a power of two, got %d", c.Buckets))
	}
	pos := []struct {
		name string
		v    int64
	}{
		{"room_workers", int64(c.RoomWorkers)},
		{"room_queue", int64(c.RoomQueue)},
		{"timer_wheels", int64(c.TimerWheels)},
		{"tcp_pollers", int64(c.TCPPollers)},
		{"deep_workers", int64(c.DeepWorkers)},
		{"timer_tick", int64(c.TimerTick)},
		{"logic_timeout", int64(c.LogicTimeout)},
		{"handshake_timeout", int64(c.HandshakeTimeout)},
		{"heartbeat_interval", int64(c.HeartbeatInterval)},
		{"heartbeat_missed", int64(c.HeartbeatMissed)},
		{"logic_heartbeat", int64(c.LogicHeartbeat)},
		{"online_interval", int64(c.OnlineInterval)},
		{"max_body", int64(c.MaxBody)},
		{"max_queue_bytes", int64(c.MaxQueueBytes)},
		{"max_accepts", int64(c.MaxAccepts)},
		{"write_timeout", int64(c.WriteTimeout)},
		{"kick_write_timeout", int64(c.KickWriteTimeout)},
		{"ws_read_buffer_size", int64(c.WSReadBufferSize)},
		{"ws_write_buffer_size", int64(c.WSWriteBufferSize)},
		{"drain_parallelism", int64(c.DrainParallelism)},
		{"drain_timeout", int64(c.DrainTimeout)},
	}
	for _, p := range pos {
		if p.v < 0 {
			errs = append(errs, config.Errorf(p.name, "must not be negative, got %d", p.v))
		}
	}
	if c.DrainSpread >= c.DrainTimeout {
		errs = append(errs, config.Errorf("drain_spread", "must be shorter than drain_timeout (%v), got %v", c.DrainTimeout, c.DrainSpread))
	}
	if c.MaxQueueBytes < c.MaxBody+protocol.HeaderLen {
		errs = append(errs, config.Errorf("max_queue_bytes", "must hold at least one frame of max_body (%d), got %d", c.MaxBody+protocol.HeaderLen, c.MaxQueueBytes))
	}
	if (c.WSSAddr != "" || c.TCPTLSAddr != "") && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		errs = append(errs, config.Errorf("tls_cert_file", "tls_cert_file and tls_key_file are required when wss_addr or tcp_tls_addr is set"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("comet: %w", errors.Join(errs...))
	}
	return nil
}
