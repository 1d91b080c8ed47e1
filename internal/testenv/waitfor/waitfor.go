// Package waitfor polls a condition in tests until it holds or a deadline
// passes — the one poll loop the packages' test helpers share.
package waitfor

import (
	"testing"
	"time"
)

// interval is the pause between two polls.
const interval = 2 * time.Millisecond

// Until polls cond until it returns true, failing tb with "timed out
// after <within> waiting for <what>" if it still does not after within.
func Until(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Poll(within, cond) {
		tb.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// Poll polls cond until it returns true (then true) or within passes
// (then false), for callers that report the failure themselves.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
