package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadersMatchCommands: the loaders configs_test.go uses are the ones
// the commands call, so a command switching to another config type cannot
// leave the deploy checks validating against the old one.
func TestLoadersMatchCommands(t *testing.T) {
	for _, tc := range []struct{ dir, call string }{
		{"../cmd/comet", "cometconf.Load("},
		{"../cmd/logic", "logicconf.Load("},
		{"../cmd/job", "jobconf.Load("},
	} {
		entries, err := os.ReadDir(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			src, err := os.ReadFile(filepath.Join(tc.dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			found = found || strings.Contains(string(src), tc.call)
		}
		if !found {
			t.Errorf("%s no longer calls %s: update the service's loader in configs_test.go", tc.dir, tc.call)
		}
	}
}
