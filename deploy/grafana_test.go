package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const dashboardPath = "grafana/hubuim.json"

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

var metricRE = regexp.MustCompile(`\bhubuim_[a-z0-9_]+`)

// histogramSuffixes are the series a histogram or summary exposes.
var histogramSuffixes = []string{"_bucket", "_sum", "_count"}

func loadDashboard(tb testing.TB) dashboard {
	tb.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		tb.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		tb.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]int{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panel %q overlaps panel %d at (%d,%d)", p.Title, other, x, y)
					x, y = 1<<30, 1<<30 // one report per panel
				} else {
					used[cell{x, y}] = p.ID
				}
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") ||
				strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") || strings.Count(tg.Expr, "[") != strings.Count(tg.Expr, "]") {
				t.Errorf("panel %q query %s: empty or unbalanced: %q", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
}

// TestDashboardMetricsExist: every metric the dashboard queries is defined
// in the services' code, so a rename breaks this test, not the dashboard.
func TestDashboardMetricsExist(t *testing.T) {
	defined := definedMetrics(t, "..")
	if len(defined.full) == 0 {
		t.Fatal("found no metric names in the source tree: the scan is broken")
	}
	d := loadDashboard(t)
	seen := map[string]bool{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, name := range metricRE.FindAllString(tg.Expr, -1) {
				if seen[name] {
					continue
				}
				seen[name] = true
				if !defined.has(name) {
					t.Errorf("panel %q uses %s, which no Go file outside tests defines", p.Title, name)
				}
			}
		}
	}
	if len(seen) == 0 {
		t.Error("the dashboard queries no hubuim_ metric")
	}
}

// metricNames is what a scan of the Go sources found.
type metricNames struct {
	full map[string]bool // "hubuim_comet_connections"
	// parts are the string literals of files that also contain "hubuim",
	// for names built from Namespace, Subsystem and Name.
	parts []map[string]bool
}

func (m metricNames) has(name string) bool {
	for _, cand := range append([]string{name}, trimHistogram(name)...) {
		if m.full[cand] {
			return true
		}
		rest, ok := strings.CutPrefix(cand, "hubuim_")
		if !ok {
			continue
		}
		for _, lits := range m.parts {
			for i := range len(rest) {
				if rest[i] == '_' && lits[rest[:i]] && lits[rest[i+1:]] {
					return true
				}
			}
		}
	}
	return false
}

func trimHistogram(name string) []string {
	var out []string
	for _, s := range histogramSuffixes {
		if base, ok := strings.CutSuffix(name, s); ok {
			out = append(out, base)
		}
	}
	return out
}

// definedMetrics collects the string literals of the non-test Go files of
// the repository at root (this module's own files excluded).
func definedMetrics(tb testing.TB, root string) metricNames {
	tb.Helper()
	m := metricNames{full: map[string]bool{}}
	self, err := filepath.Abs(".")
	if err != nil {
		tb.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			abs, _ := filepath.Abs(path)
			if abs == self || strings.HasPrefix(e.Name(), ".") && path != root || e.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil // someone's work in progress; not this test's business
		}
		lits := map[string]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				if s, err := strconv.Unquote(bl.Value); err == nil {
					lits[s] = true
					if metricRE.MatchString(s) && metricRE.FindString(s) == s {
						m.full[s] = true
					}
				}
			}
			return true
		})
		if lits["hubuim"] {
			m.parts = append(m.parts, lits)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}
