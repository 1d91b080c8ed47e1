package discovery

import "context"

// Crash stops e as a dying process would: goroutines stop and the client
// closes, but no lease is revoked.
func Crash(e *Etcd) { e.crash() }

// WatchFrom is Watch with the watch started after revision rev instead of
// after the first list.
func WatchFrom(ctx context.Context, e *Etcd, service string, rev int64) (<-chan []Instance, error) {
	return e.watch(ctx, service, rev)
}

// DecodeInstance decodes one registered value.
var DecodeInstance = decodeInstance
