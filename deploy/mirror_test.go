package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// cmd/job's config struct lives in package main and cannot be imported,
// so configs_test.go mirrors its top level. This test parses the commands' source and fails as soon as a
// mirror and its original disagree on a yaml key or a field type.
func TestConfigMirrorsMatchCommands(t *testing.T) {
	for _, tc := range []struct {
		dir, typeName string
		mirror        reflect.Type
	}{
		{"../cmd/job", "Config", reflect.TypeFor[jobFileConfig]()},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			types := parseStructs(t, tc.dir)
			if types[tc.typeName] == nil {
				t.Fatalf("%s: no struct type %s (renamed? update configs_test.go)", tc.dir, tc.typeName)
			}
			want := astShape(types, types[tc.typeName])
			got := mirrorShape(tc.mirror)
			compareShapes(t, tc.typeName, want, got)
		})
	}
}

// A shape maps each yaml key to the field's type ("admin.Config",
// "time.Duration", "[]string") or, for a struct defined in the same
// package, to that struct's shape.
type shape map[string]any

func parseStructs(tb testing.TB, dir string) map[string]*ast.StructType {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]*ast.StructType{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			tb.Fatalf("%s: %v", e.Name(), err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, s := range g.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok {
					if st, ok := ts.Type.(*ast.StructType); ok {
						out[ts.Name.Name] = st
					}
				}
			}
		}
	}
	return out
}

func astShape(types map[string]*ast.StructType, st *ast.StructType) shape {
	sh := shape{}
	for _, f := range st.Fields.List {
		for _, n := range f.Names {
			if !n.IsExported() {
				continue
			}
			key := strings.ToLower(n.Name)
			if f.Tag != nil {
				tag := reflect.StructTag(strings.Trim(f.Tag.Value, "`"))
				if y := strings.Split(tag.Get("yaml"), ",")[0]; y == "-" {
					continue
				} else if y != "" {
					key = y
				}
			}
			if id, ok := f.Type.(*ast.Ident); ok && types[id.Name] != nil {
				sh[key] = astShape(types, types[id.Name])
				continue
			}
			sh[key] = exprString(f.Type)
		}
	}
	return sh
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	case *ast.ArrayType:
		return "[]" + exprString(e.Elt)
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	case *ast.MapType:
		return "map[" + exprString(e.Key) + "]" + exprString(e.Value)
	}
	return "?"
}

func mirrorShape(t reflect.Type) shape {
	self := reflect.TypeFor[shape]().PkgPath()
	sh := shape{}
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if !f.IsExported() || key == "-" {
			continue
		}
		if key == "" {
			key = strings.ToLower(f.Name)
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == self {
			sh[key] = mirrorShape(f.Type)
			continue
		}
		sh[key] = f.Type.String()
	}
	return sh
}

func compareShapes(t *testing.T, path string, want, got shape) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s.%s: in the command's config, missing from the mirror", path, k)
		case reflect.TypeOf(w) != reflect.TypeOf(g):
			t.Errorf("%s.%s: the command has %v, the mirror %v", path, k, w, g)
		default:
			if ws, ok := w.(shape); ok {
				compareShapes(t, path+"."+k, ws, g.(shape))
			} else if w != g {
				t.Errorf("%s.%s: the command has type %v, the mirror %v", path, k, w, g)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s.%s: in the mirror, not in the command's config", path, k)
		}
	}
}

// TestLoadersMatchCommands: the loaders configs_test.go uses are the ones
// the commands call, so a command switching to another config type cannot
// leave the deploy checks validating against the old one.
func TestLoadersMatchCommands(t *testing.T) {
	for _, tc := range []struct{ dir, call string }{
		{"../cmd/comet", "comet.LoadConfig("},
		{"../cmd/logic", "logicconf.Load("},
		{"../cmd/job", "config.Load(path, EnvPrefix, &cfg)"}, // into Config, mirrored by jobFileConfig
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
