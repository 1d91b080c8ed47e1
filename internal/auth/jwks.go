package auth

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// jwksKidMissRecheck is the shortest interval between re-reads forced by
// tokens carrying an unknown kid, so a flood of such tokens costs at most
// one file read per interval.
const jwksKidMissRecheck = time.Second

// jwksFile serves the keys of a JWKS file and re-reads it on the
// verification path once the reload interval has passed. Only one caller
// re-reads at a time; the others keep using the current keys. A file that
// fails to parse keeps the previous keys.
type jwksFile struct {
	path     string
	interval time.Duration // <= 0: never re-read
	// minRecheck is the shortest interval between re-reads forced by an
	// unknown kid; jwksKidMissRecheck outside tests.
	minRecheck time.Duration
	logger     *slog.Logger

	keys      atomic.Pointer[keySet]
	lastCheck atomic.Int64 // unix nanoseconds of the last re-read attempt

	mu      sync.Mutex // held while re-reading; guards raw
	raw     []byte     // contents the current keys came from
	lastErr string     // guarded by mu; last reload failure, to log it once
}

func newJWKSFile(path string, interval time.Duration, logger *slog.Logger) (*jwksFile, error) {
	f := &jwksFile{path: path, interval: interval, minRecheck: jwksKidMissRecheck, logger: logger}
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	set, skipped, err := parseJWKS(data)
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		logger.Warn("JWKS key skipped", "file", path, "detail", s)
	}
	f.raw = data
	f.keys.Store(set)
	f.lastCheck.Store(time.Now().UnixNano())
	return f, nil
}

// current returns the keys, re-reading the file first when it is due.
func (f *jwksFile) current(now time.Time) *keySet {
	if f.interval > 0 {
		f.maybeReload(now, f.interval)
	}
	return f.keys.Load()
}

// recheck re-reads the file after a token named an unknown kid, at most
// once per minRecheck, and reports whether the keys changed.
func (f *jwksFile) recheck(now time.Time) bool {
	if f.interval <= 0 {
		return false
	}
	return f.maybeReload(now, f.minRecheck)
}

func (f *jwksFile) maybeReload(now time.Time, minAge time.Duration) bool {
	last := f.lastCheck.Load()
	if now.UnixNano()-last < int64(minAge) {
		return false
	}
	if !f.mu.TryLock() {
		return false // someone else is re-reading
	}
	defer f.mu.Unlock()
	if f.lastCheck.Load() != last {
		return false // re-read by someone else meanwhile
	}
	f.lastCheck.Store(now.UnixNano())
	return f.reloadLocked()
}

func (f *jwksFile) reloadLocked() bool {
	data, err := readBounded(f.path)
	if err == nil && bytes.Equal(data, f.raw) {
		f.lastErr = ""
		return false
	}
	var (
		set     *keySet
		skipped []string
	)
	if err == nil {
		set, skipped, err = parseJWKS(data)
	}
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			f.logger.Warn("JWKS reload failed, keeping the previous keys", "file", f.path, "err", err)
		}
		return false
	}
	for _, s := range skipped {
		f.logger.Warn("JWKS key skipped", "file", f.path, "detail", s)
	}
	f.lastErr = ""
	f.raw = data
	f.keys.Store(set)
	f.logger.Info("JWKS reloaded", "file", f.path, "keys", set.len())
	return true
}
