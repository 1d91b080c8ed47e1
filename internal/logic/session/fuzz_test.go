package session

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseUserValue: any stored value decodes or is skipped, never
// panics, and what userValue writes reads back.
func FuzzParseUserValue(f *testing.F) {
	f.Add("k", "1700000000000\x00comet\x00conn\x00web")
	f.Add("k", "")
	f.Add("k", "x\x00\x00\x00")
	f.Add("k", "99999999999999999999999\x00a\x00b\x00c")
	f.Fuzz(func(t *testing.T, key, v string) {
		d, _, ok := parseUserValue(key, v)
		if ok && d.Key != key {
			t.Fatalf("key %q decoded as %q", key, d.Key)
		}
		if strings.Contains(v, sep) {
			return
		}
		s := Session{Key: key, Server: "srv", ConnID: "c", Platform: v}
		dl := time.UnixMilli(1700000000000)
		d, got, ok := parseUserValue(key, userValue(s, dl))
		if !ok || got != dl.UnixMilli() || d.Platform != v || d.Server != "srv" || d.ConnID != "c" {
			t.Fatalf("round trip of platform %q: %+v %d %v", v, d, got, ok)
		}
	})
}
