package discovery

// Crash stops e as a dying process would: goroutines stop and the client
// closes, but no lease is revoked.
func Crash(e *Etcd) { e.crash() }
