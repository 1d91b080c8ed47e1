package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// Transports accepted by Config.Transport and as address schemes.
const (
	TransportTCP = "tcp" // plain TCP, goim frames (comet port 3101)
	TransportTLS = "tls" // TCP + TLS (comet port 3104)
	TransportWS  = "ws"  // WebSocket, one frame per binary message (3102)
	TransportWSS = "wss" // WebSocket + TLS (3103)
)

// Defaults of Config. Each is also written in the comment of its field.
const (
	DefaultTransport          = TransportTCP
	DefaultWSPath             = "/sub"
	DefaultDialTimeout        = 10 * time.Second
	DefaultWriteTimeout       = 10 * time.Second
	DefaultHeartbeatMin       = 60 * time.Second
	DefaultHeartbeatMax       = 300 * time.Second
	DefaultHeartbeatStep      = 30 * time.Second
	DefaultHeartbeatGrowAfter = 3
	DefaultHeartbeatTimeout   = 15 * time.Second
	DefaultBackoffBase        = 500 * time.Millisecond
	DefaultBackoffMax         = 30 * time.Second
	DefaultBackoffFactor      = 2.0
	DefaultBackoffJitter      = 0.2
	DefaultSendTimeout        = 5 * time.Second
	DefaultMaxResends         = 5
	DefaultSyncLimit          = 100
	DefaultAckInterval        = time.Second
	DefaultAckMaxDelay        = 10 * time.Second
	DefaultEventBuffer        = 256
	DefaultMaxInboundBody     = 1 << 20
	DefaultReorderLimit       = 1024
	DefaultGapWait            = time.Minute
	DefaultGapGrace           = 250 * time.Millisecond
)

// Config configures a Client. The zero value of every field means its
// default, written in the field's comment. Only an address source (Addrs or
// NodeListURL) is required.
type Config struct {
	// Addrs are comet addresses tried in order, each "host:port" (dialed
	// with Transport) or "scheme://host:port[/path]" with scheme tcp, tls,
	// ws or wss, which overrides Transport for that address.
	Addrs []string
	// NodeListURL is logic's node list (GET /goim/nodes/weighted). When
	// set it is fetched before every connection round and its nodes are
	// tried in order before Addrs. Its hints are followed: heartbeats come
	// at least as often as its heartbeat interval, and its backoff may
	// stretch the Backoff* settings below (never shorten them).
	NodeListURL string
	// HTTPClient fetches NodeListURL. Default: an http.Client with
	// DialTimeout as its timeout.
	HTTPClient *http.Client
	// Transport is tcp, tls, ws or wss. Default: tcp.
	Transport string
	// TLS is the TLS configuration for tls and wss. Default: the system
	// roots and the address's host as ServerName.
	TLS *tls.Config
	// WSPath is the WebSocket path appended to host:port addresses.
	// Default: /sub.
	WSPath string
	// DialTimeout bounds dialing and the Auth exchange. Default: 10s.
	DialTimeout time.Duration
	// WriteTimeout bounds every write on the connection. Default: 10s.
	WriteTimeout time.Duration

	// Mid is the user id sent in Auth. The server may assign it (it is
	// then taken from the AuthReply).
	Mid int64
	// Key is the device key. Empty: the server assigns one, which is then
	// reused on every reconnect.
	Key string
	// Platform is sent in Auth (e.g. "ios", "android", "web").
	Platform string
	// RoomID is the room joined at Auth, "type://id". Empty: no room.
	RoomID string
	// Accepts are the business ops (>= 1000) this connection accepts.
	Accepts []int32
	// Token is sent in Auth. Ignored when TokenFunc is set.
	Token string
	// TokenFunc, when set, is called before every connection attempt, so
	// an expired token can be refreshed.
	TokenFunc func(ctx context.Context) (string, error)

	// HeartbeatMin is the lower bound and the starting point of the
	// adaptive heartbeat interval. Default: 60s.
	HeartbeatMin time.Duration
	// HeartbeatMax is the upper bound of the interval. Default: 300s. A
	// heartbeat_ms in the AuthReply lowers both bounds to what the server
	// expects (HubuIM's comet closes a connection after 3 missed
	// intervals), so the client never heartbeats less often than asked.
	HeartbeatMax time.Duration
	// HeartbeatStep is how much the interval grows after HeartbeatGrowAfter
	// successes in a row and shrinks after a failure. Default: 30s.
	HeartbeatStep time.Duration
	// HeartbeatGrowAfter is the number of answered heartbeats in a row
	// after which the interval grows by one step. Default: 3.
	HeartbeatGrowAfter int
	// HeartbeatTimeout is how long a heartbeat waits for its reply. A
	// timeout is a failure (the interval shrinks); when not a byte arrived
	// during it, the connection is dead and is replaced (a big frame still
	// arriving keeps it alive).
	// Default: 15s.
	HeartbeatTimeout time.Duration

	// BackoffBase is the first reconnect delay. Default: 500ms.
	BackoffBase time.Duration
	// BackoffMax caps the reconnect delay. Default: 30s.
	BackoffMax time.Duration
	// BackoffFactor multiplies the delay after each failed attempt.
	// Default: 2.
	BackoffFactor float64
	// BackoffJitter is the relative jitter, in [0, 1]: a delay d becomes a
	// uniform value in [d(1-j), d(1+j)], capped at BackoffMax. Default: 0.2.
	// Use a negative value for no jitter.
	BackoffJitter float64

	// SendTimeout is how long one MsgSend (or request) attempt waits for
	// its ACK before it is resent. Default: 5s.
	SendTimeout time.Duration
	// MaxResends is how many times Send resends an unacknowledged message
	// after the first attempt. Default: 5.
	MaxResends int

	// Cursors are the highest contiguous seq per conversation id that the
	// app already holds (persisted from Client.Cursors). Default: none.
	Cursors map[string]int64
	// SyncLimit is the number of messages asked for per Sync. Default: 100.
	SyncLimit int32
	// AckInterval is how often delivered acks (op 23) are flushed. An ack
	// carries the conversation's highest contiguous seq, so acks coalesce:
	// a conversation that moved and then went quiet for an AckInterval is
	// acked at the next flush (within two intervals of its last message),
	// one that keeps moving once every AckMaxDelay, and Close acks every
	// conversation that moved. Default: 1s.
	AckInterval time.Duration
	// AckMaxDelay is how long a conversation that keeps receiving goes
	// without a delivered ack (rounded up to AckIntervals). Set it to
	// AckInterval for an ack every AckInterval. Default: 10s.
	AckMaxDelay time.Duration
	// ReorderLimit bounds the out-of-order messages buffered per
	// conversation while a gap is being pulled; beyond it the newest are
	// dropped (they are pulled again). Default: 1024.
	ReorderLimit int
	// GapGrace is the least time a gap seen on a push or an ACK (a seq
	// arrived above the contiguous one) may stay without progress before
	// the missing range is pulled. Most gaps fill by themselves: the ACK
	// of the device's own message travels faster than the push of a
	// message the peer sent just before it (that one goes through the
	// queue), so pulling at once costs a Sync round trip for a message
	// already on its way. The client measures how late those pushes come
	// and waits twice that mean, between GapGrace and 8 × GapGrace. A
	// MsgNotify is pulled at once. Default: 250ms (so at most 2s);
	// negative: pull at once.
	GapGrace time.Duration
	// GapWait bounds how long a missing seq the server has not settled
	// (SyncReply settled_seq: it may still be in flight) is waited for and
	// pulled again before the client moves past it with ErrGapUnfilled.
	// Default: 1m.
	GapWait time.Duration

	// EventBuffer is the capacity of the Events channel. Default: 256.
	EventBuffer int
	// MaxBody is the largest body the client sends, the server's limit
	// (PROTOCOL.md); larger sends fail with ErrTooLarge. Default: 16 KiB.
	MaxBody int
	// MaxInboundBody is the largest frame body accepted from the server:
	// SyncReply pages and OpRaw batches are bigger than what a client may
	// send. A larger frame is read and discarded without being buffered
	// (an Error event with an *OversizeError); an oversized SyncReply is
	// asked for again with half the page size. Default: 1 MiB.
	MaxInboundBody int

	// Logger receives connection-level logs (never per message).
	// Default: slog.Default().
	Logger *slog.Logger
	// Metrics receives the client's counters. Many clients in one process
	// (a load generator) share one Metrics from NewMetrics. Default: nil,
	// nothing is counted.
	Metrics *Metrics
}

// withDefaults returns cfg with its zero fields set to their defaults and
// checks it.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Addrs) == 0 && cfg.NodeListURL == "" {
		return cfg, configErr("Addrs", "one of Addrs or NodeListURL is required")
	}
	if cfg.Transport == "" {
		cfg.Transport = DefaultTransport
	}
	cfg.Transport = strings.ToLower(cfg.Transport)
	if !validTransport(cfg.Transport) {
		return cfg, configErr("Transport", "%q is not one of tcp, tls, ws, wss", cfg.Transport)
	}
	for i, a := range cfg.Addrs {
		if _, err := parseAddr(a, cfg.Transport, "/"); err != nil {
			return cfg, configErr(fmt.Sprintf("Addrs[%d]", i), "%v", err)
		}
	}
	setDur(&cfg.DialTimeout, DefaultDialTimeout)
	setDur(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDur(&cfg.HeartbeatMin, DefaultHeartbeatMin)
	setDur(&cfg.HeartbeatMax, DefaultHeartbeatMax)
	setDur(&cfg.HeartbeatStep, DefaultHeartbeatStep)
	setDur(&cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDur(&cfg.BackoffBase, DefaultBackoffBase)
	setDur(&cfg.BackoffMax, DefaultBackoffMax)
	setDur(&cfg.SendTimeout, DefaultSendTimeout)
	setDur(&cfg.AckInterval, DefaultAckInterval)
	setDur(&cfg.AckMaxDelay, DefaultAckMaxDelay)
	if cfg.WSPath == "" {
		cfg.WSPath = DefaultWSPath
	}
	if cfg.HeartbeatGrowAfter == 0 {
		cfg.HeartbeatGrowAfter = DefaultHeartbeatGrowAfter
	}
	if cfg.BackoffFactor == 0 {
		cfg.BackoffFactor = DefaultBackoffFactor
	}
	switch {
	case cfg.BackoffJitter == 0:
		cfg.BackoffJitter = DefaultBackoffJitter
	case cfg.BackoffJitter < 0:
		cfg.BackoffJitter = 0
	}
	if cfg.MaxResends == 0 {
		cfg.MaxResends = DefaultMaxResends
	}
	if cfg.SyncLimit == 0 {
		cfg.SyncLimit = DefaultSyncLimit
	}
	if cfg.ReorderLimit == 0 {
		cfg.ReorderLimit = DefaultReorderLimit
	}
	if cfg.GapWait == 0 {
		cfg.GapWait = DefaultGapWait
	}
	switch {
	case cfg.GapGrace == 0:
		cfg.GapGrace = DefaultGapGrace
	case cfg.GapGrace < 0:
		cfg.GapGrace = 0
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = protocol.DefaultMaxBody
	}
	if cfg.MaxInboundBody == 0 {
		cfg.MaxInboundBody = DefaultMaxInboundBody
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.DialTimeout}
	}
	return cfg, cfg.validate()
}

func (cfg *Config) validate() error {
	durs := []struct {
		name string
		d    time.Duration
	}{
		{"DialTimeout", cfg.DialTimeout}, {"WriteTimeout", cfg.WriteTimeout},
		{"HeartbeatMin", cfg.HeartbeatMin}, {"HeartbeatMax", cfg.HeartbeatMax},
		{"HeartbeatStep", cfg.HeartbeatStep}, {"HeartbeatTimeout", cfg.HeartbeatTimeout},
		{"BackoffBase", cfg.BackoffBase}, {"BackoffMax", cfg.BackoffMax},
		{"SendTimeout", cfg.SendTimeout}, {"AckInterval", cfg.AckInterval},
		{"AckMaxDelay", cfg.AckMaxDelay},
	}
	for _, d := range durs {
		if d.d < 0 {
			return configErr(d.name, "must not be negative, got %v", d.d)
		}
	}
	switch {
	case cfg.HeartbeatMax < cfg.HeartbeatMin:
		return configErr("HeartbeatMax", "%v is below HeartbeatMin %v", cfg.HeartbeatMax, cfg.HeartbeatMin)
	case cfg.BackoffMax < cfg.BackoffBase:
		return configErr("BackoffMax", "%v is below BackoffBase %v", cfg.BackoffMax, cfg.BackoffBase)
	case cfg.HeartbeatGrowAfter < 0:
		return configErr("HeartbeatGrowAfter", "must not be negative")
	case cfg.BackoffFactor < 1:
		return configErr("BackoffFactor", "must be at least 1, got %v", cfg.BackoffFactor)
	case cfg.BackoffJitter > 1:
		return configErr("BackoffJitter", "must be at most 1, got %v", cfg.BackoffJitter)
	case cfg.MaxResends < 0:
		return configErr("MaxResends", "must not be negative")
	case cfg.SyncLimit < 0:
		return configErr("SyncLimit", "must not be negative")
	case cfg.ReorderLimit < 0:
		return configErr("ReorderLimit", "must not be negative")
	case cfg.EventBuffer < 0:
		return configErr("EventBuffer", "must not be negative")
	case cfg.MaxBody < 0:
		return configErr("MaxBody", "must not be negative")
	case cfg.MaxInboundBody < 0:
		return configErr("MaxInboundBody", "must not be negative")
	}
	for conv, seq := range cfg.Cursors {
		if conv == "" {
			return configErr("Cursors", "empty conversation id")
		}
		if seq < 0 {
			return configErr("Cursors", "conversation %q has negative seq %d", conv, seq)
		}
	}
	for _, op := range cfg.Accepts {
		if op < 0 {
			return configErr("Accepts", "negative op %d", op)
		}
	}
	return nil
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

func validTransport(t string) bool {
	switch t {
	case TransportTCP, TransportTLS, TransportWS, TransportWSS:
		return true
	}
	return false
}
