package store

import (
	"errors"
	"testing"
	"testing/fstest"

	"github.com/hubuim/hubuim/api/protocol"
)

func TestConvIDs(t *testing.T) {
	if got := SingleConvID(9, 3); got != "s:3:9" {
		t.Fatalf("SingleConvID(9, 3) = %q", got)
	}
	if SingleConvID(3, 9) != SingleConvID(9, 3) {
		t.Fatal("SingleConvID depends on argument order")
	}
	if got := GroupConvID(42); got != "g:42" {
		t.Fatalf("GroupConvID(42) = %q", got)
	}
	const big = 9223372036854775807
	for _, id := range []string{"s:1:2", "g:1", SingleConvID(big-1, big), GroupConvID(big)} {
		c, err := ParseConvID(id)
		if err != nil {
			t.Fatalf("ParseConvID(%q): %v", id, err)
		}
		if c.String() != id {
			t.Fatalf("ParseConvID(%q).String() = %q", id, c.String())
		}
	}
	c, _ := ParseConvID("s:5:7")
	if c.Type != protocol.ConvType_CONV_TYPE_SINGLE || c.A != 5 || c.B != 7 {
		t.Fatalf("ParseConvID(s:5:7) = %+v", c)
	}
	for _, bad := range []string{"", "s:", "g:", "g:0", "g:-1", "g:01", "g:+1", "s:1", "s:2:1", "s:1:1",
		"s:0:1", "s:1:2:3", "x:1", "g:1 ", "g:9223372036854775808", "s:1:02", "G:1"} {
		if _, err := ParseConvID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseConvID(%q) err=%v, want ErrInvalid", bad, err)
		}
	}
}

func FuzzParseConvID(f *testing.F) {
	for _, s := range []string{"s:1:2", "g:7", "s:2:1", "g:", "s::", "g:9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConvID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseConvID(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		// Accepted ids are canonical.
		if c.String() != s {
			t.Fatalf("ParseConvID(%q).String() = %q", s, c.String())
		}
	})
}

func TestLoadMigrations(t *testing.T) {
	ok := fstest.MapFS{
		"0002_b.sql": {Data: []byte("B")},
		"0001_a.sql": {Data: []byte("A")},
		"README.md":  {Data: []byte("ignored")},
	}
	migs, err := loadMigrations(ok)
	if err != nil || len(migs) != 2 || migs[0].sql != "A" || migs[1].version != 2 {
		t.Fatalf("loadMigrations = %+v, %v", migs, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"0001_a.sql": {}, "0003_c.sql": {}},
		"duplicate": {"0001_a.sql": {}, "0001_b.sql": {}},
		"bad name":  {"init.sql": {}},
		"zero":      {"0000_a.sql": {}},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: loadMigrations succeeded", name)
		}
	}
	// The embedded set itself is well-formed.
	if err := func() error { _, err := loadMigrations(mustSub(t)); return err }(); err != nil {
		t.Fatal(err)
	}
}

func mustSub(t *testing.T) fstest.MapFS {
	t.Helper()
	entries, err := migrationFS.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, e := range entries {
		data, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = &fstest.MapFile{Data: data}
	}
	return out
}
