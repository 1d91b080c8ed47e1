package comet

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ipShards is the number of shards of ipCounter (a power of two). An IP
// address lives in exactly one shard, so the distinct count is the sum of
// the shards' distinct counts; sharding only spreads the lock.
const ipShards = 64

// cacheLine pads the shards apart so that their locks do not share a line.
const cacheLine = 64

// ipShardSize is the unpadded size of ipShard's fields (mutex, map pointer).
const ipShardSize = 16

// ipCounter counts the distinct client IP addresses of the authenticated
// connections: a reference count per address, sharded by address hash. It
// costs one map entry per distinct address and nothing per connection (the
// address is read again from the socket when the connection finishes).
type ipCounter struct {
	shards   [ipShards]ipShard
	distinct atomic.Int64
	gauge    prometheus.Gauge // nil = not exported
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]int32 // address → live connections; nil when empty
	_  [cacheLine - ipShardSize]byte
}

// remoteIP is the client address of a socket (IPv4-mapped IPv6 addresses
// unmapped, zone dropped); the zero Addr for non-IP sockets, which are not
// counted. It does not allocate.
func remoteIP(nc net.Conn) netip.Addr {
	ta, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// shard picks a's shard (FNV-1a over its 16-byte form).
func (ic *ipCounter) shard(a netip.Addr) *ipShard {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	b := a.As16()
	h := uint32(offset32)
	for _, x := range b {
		h ^= uint32(x)
		h *= prime32
	}
	return &ic.shards[h&(ipShards-1)]
}

// add counts one more connection from a.
func (ic *ipCounter) add(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	sh := ic.shard(a)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[netip.Addr]int32)
	}
	n := sh.m[a]
	sh.m[a] = n + 1
	sh.mu.Unlock()
	if n == 0 {
		ic.distinct.Add(1)
		if ic.gauge != nil {
			ic.gauge.Inc()
		}
	}
}

// remove counts one connection from a less; a must have been added.
func (ic *ipCounter) remove(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	sh := ic.shard(a)
	sh.mu.Lock()
	n, ok := sh.m[a]
	switch {
	case !ok:
	case n > 1:
		sh.m[a] = n - 1
	default:
		delete(sh.m, a)
		if len(sh.m) == 0 {
			sh.m = nil // a Go map never shrinks: let a drained one go
		}
	}
	sh.mu.Unlock()
	if ok && n <= 1 {
		ic.distinct.Add(-1)
		if ic.gauge != nil {
			ic.gauge.Dec()
		}
	}
}

// count is the number of distinct addresses.
func (ic *ipCounter) count() int64 { return ic.distinct.Load() }
