// Package discovery is how HubuIM services find each other: comets and
// logics register an Instance under their service name, and logic and job
// watch the comets. Implementations: etcd (distributed mode) and a static,
// in-process registry (tests and the standalone mode).
package discovery

import (
	"context"
	"errors"
)

// Service names.
const (
	ServiceComet = "comet"
	ServiceLogic = "logic"
)

// Address kinds in Instance.Addrs.
const (
	AddrTCP    = "tcp"     // comet TCP
	AddrWS     = "ws"      // comet WebSocket
	AddrWSS    = "wss"     // comet WebSocket + TLS
	AddrTCPTLS = "tcp_tls" // comet TCP + TLS
	AddrGRPC   = "grpc"    // comet or logic gRPC
	AddrHTTP   = "http"    // logic HTTP
)

// ErrClosed is returned by a Registry used after Close, and by a
// Registration used after its Close.
var ErrClosed = errors.New("discovery: closed")

// ErrInvalidInstance is returned for an Instance that cannot be registered
// (ID or Service empty or containing '/'), a service name that cannot be
// watched, or an Update that would change a registration's ID or Service.
var ErrInvalidInstance = errors.New("discovery: invalid instance")

// Instance is one registered process.
type Instance struct {
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Region   string            `json:"region,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Lat      float64           `json:"lat,omitempty"`
	Lon      float64           `json:"lon,omitempty"`
	Weight   int               `json:"weight,omitempty"`
	Addrs    map[string]string `json:"addrs"`
	Conns    int64             `json:"conns,omitempty"`    // live connections (comet)
	IPs      int64             `json:"ips,omitempty"`      // distinct client IPs of Conns (comet); absent = 0
	Draining bool              `json:"draining,omitempty"` // comet is shutting down
}

// Registrar registers this process.
type Registrar interface {
	// Register publishes ins until the Registration is closed or the
	// process dies (then it expires).
	Register(ctx context.Context, ins Instance) (Registration, error)
}

// Registration is one live registration.
type Registration interface {
	// Update replaces the published instance (load, draining flag).
	Update(ctx context.Context, ins Instance) error
	// Close removes the registration.
	Close(ctx context.Context) error
}

// Watcher follows the instances of a service.
type Watcher interface {
	// Watch returns a channel that receives the full current list of
	// instances of service whenever it changes, starting with the current
	// one. The channel is closed when ctx is done. A lost backend keeps the
	// last known list.
	Watch(ctx context.Context, service string) (<-chan []Instance, error)
}

// Registry is both sides, as implemented by etcd and Static.
type Registry interface {
	Registrar
	Watcher
	Close() error
}
