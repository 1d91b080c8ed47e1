package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type tcpConfig struct {
	Addr      string        `yaml:"addr"`
	Port      int           `yaml:"port"`
	KeepAlive time.Duration `yaml:"keep-alive"`
}

type testConfig struct {
	Name     string        `yaml:"name"`
	Workers  int           `yaml:"workers"`
	MaxBytes int64         `yaml:"max_bytes"`
	Shards   uint32        `yaml:"shards"`
	Ratio    float64       `yaml:"ratio"`
	Debug    bool          `yaml:"debug"`
	Timeout  time.Duration `yaml:"timeout"`
	Peers    []string      `yaml:"peers"`
	Ops      []int32       `yaml:"ops"`
	TCP      tcpConfig     `yaml:"tcp"`
	Untagged string
	Skipped  string            `yaml:"-"`
	Labels   map[string]string `yaml:"labels"`
	internal string
}

// envMap is a lookup over a fixed set of variables, so tests never touch
// the process environment.
func envMap(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDecode(t *testing.T) {
	var c testConfig
	err := Decode([]byte(`
name: comet-1
workers: 8
timeout: 1500ms
peers: [a, b]
tcp:
  addr: ":3101"
  keep-alive: 30s
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "comet-1" || c.Workers != 8 || c.Timeout != 1500*time.Millisecond ||
		!reflect.DeepEqual(c.Peers, []string{"a", "b"}) || c.TCP.Addr != ":3101" || c.TCP.KeepAlive != 30*time.Second {
		t.Errorf("decoded %+v", c)
	}
}

func TestDecodeRejectsUnknownKeys(t *testing.T) {
	for name, doc := range map[string]string{
		"top level": "name: x\nwokers: 3\n",
		"nested":    "tcp:\n  adr: \":1\"\n",
		"skipped":   "Skipped: x\n",
	} {
		t.Run(name, func(t *testing.T) {
			var c testConfig
			err := Decode([]byte(doc), &c)
			if err == nil {
				t.Fatalf("unknown key accepted: %+v", c)
			}
			if !strings.Contains(err.Error(), "not found") {
				t.Errorf("error %q does not say the field is unknown", err)
			}
		})
	}
}

func TestDecodeEmptyAndBad(t *testing.T) {
	c := testConfig{Name: "kept"}
	if err := Decode(nil, &c); err != nil || c.Name != "kept" {
		t.Errorf("empty document: %v, name %q", err, c.Name)
	}
	if err := Decode([]byte("workers: many\n"), &c); err == nil {
		t.Error("a string for an int field was accepted")
	}
	if err := Decode([]byte("name: [unclosed\n"), &c); err == nil {
		t.Error("invalid YAML accepted")
	}
}

func TestLoadFile(t *testing.T) {
	var c testConfig
	if err := LoadFile("", &c); err != nil {
		t.Errorf("empty path: %v", err)
	}
	if err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml"), &c); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want os.ErrNotExist", err)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("workers: 4\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := LoadFile(path, &c); err == nil {
		t.Error("unknown key in a file accepted")
	}
}

func TestApplyEnvTypes(t *testing.T) {
	c := testConfig{Name: "from-file", Workers: 1, Peers: []string{"old"}}
	err := ApplyEnv("hubuim_svc", &c, envMap(
		"HUBUIM_SVC_NAME", "from-env",
		"HUBUIM_SVC_WORKERS", "0x10",
		"HUBUIM_SVC_MAX_BYTES", "-5",
		"HUBUIM_SVC_SHARDS", "4294967295",
		"HUBUIM_SVC_RATIO", "0.25",
		"HUBUIM_SVC_DEBUG", "true",
		"HUBUIM_SVC_TIMEOUT", "2m3s",
		"HUBUIM_SVC_PEERS", "a:1, b:2,c:3",
		"HUBUIM_SVC_OPS", "1000,1001",
		"HUBUIM_SVC_TCP_ADDR", "127.0.0.1:3101",
		"HUBUIM_SVC_TCP_PORT", "3101",
		"HUBUIM_SVC_TCP_KEEP_ALIVE", "45s",
		"HUBUIM_SVC_UNTAGGED", "lower-cased field name",
		"HUBUIM_SVC_SKIPPED", "must not be applied",
		"HUBUIM_SVC_INTERNAL", "must not be applied",
	))
	if err != nil {
		t.Fatal(err)
	}
	want := testConfig{
		Name: "from-env", Workers: 16, MaxBytes: -5, Shards: 4294967295, Ratio: 0.25, Debug: true,
		Timeout: 2*time.Minute + 3*time.Second, Peers: []string{"a:1", "b:2", "c:3"}, Ops: []int32{1000, 1001},
		TCP:      tcpConfig{Addr: "127.0.0.1:3101", Port: 3101, KeepAlive: 45 * time.Second},
		Untagged: "lower-cased field name",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	if c.internal != "" {
		t.Errorf("unexported field set to %q", c.internal)
	}
}

func TestApplyEnvUnsetLeavesValues(t *testing.T) {
	c := testConfig{Name: "keep", Peers: []string{"p"}, TCP: tcpConfig{Port: 7}}
	if err := ApplyEnv("X", &c, envMap()); err != nil {
		t.Fatal(err)
	}
	if c.Name != "keep" || !reflect.DeepEqual(c.Peers, []string{"p"}) || c.TCP.Port != 7 {
		t.Errorf("unset variables changed the config: %+v", c)
	}
}

func TestApplyEnvEmptyListClears(t *testing.T) {
	c := testConfig{Peers: []string{"p"}}
	if err := ApplyEnv("X", &c, envMap("X_PEERS", "")); err != nil {
		t.Fatal(err)
	}
	if c.Peers == nil || len(c.Peers) != 0 {
		t.Errorf("peers = %#v, want an empty non-nil list", c.Peers)
	}
}

func TestApplyEnvBadValueNamesField(t *testing.T) {
	tests := []struct {
		env, value, field string
	}{
		{"X_WORKERS", "eight", "workers"},
		{"X_WORKERS", "99999999999999999999", "workers"},
		{"X_SHARDS", "-1", "shards"},
		{"X_DEBUG", "yes please", "debug"},
		{"X_RATIO", "1/2", "ratio"},
		{"X_TIMEOUT", "10", "timeout"},
		{"X_OPS", "1000,abc", "ops"},
		{"X_TCP_PORT", "http", "tcp.port"},
		{"X_TCP_KEEP_ALIVE", "forever", "tcp.keep-alive"},
		{"X_LABELS", "a=b", "labels"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			var c testConfig
			err := ApplyEnv("X", &c, envMap(tt.env, tt.value))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %T %v, want *FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("Field = %q, want %q", fe.Field, tt.field)
			}
			if !strings.Contains(err.Error(), tt.env) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("message %q names neither the variable nor the field", err)
			}
		})
	}
}

func TestApplyEnvNeedsStructPointer(t *testing.T) {
	var c testConfig
	for _, dst := range []any{c, &c.Name, nil} {
		if err := ApplyEnv("X", dst, envMap()); err == nil {
			t.Errorf("ApplyEnv(%T) accepted", dst)
		}
	}
}

func TestLoadFileThenEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(path, []byte("name: file\nworkers: 2\ntcp:\n  port: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Load reads the real environment: use a prefix no one else sets.
	prefix := "HUBUIM_CONFIGTEST_" + strings.ToUpper(strings.ReplaceAll(t.Name(), "/", "_"))
	t.Setenv(prefix+"_TCP_PORT", "2")
	var c testConfig
	if err := Load(path, prefix, &c); err != nil {
		t.Fatal(err)
	}
	if c.Name != "file" || c.Workers != 2 || c.TCP.Port != 2 {
		t.Errorf("got %+v: want file values with tcp.port overridden by the environment", c)
	}

	t.Setenv(prefix+"_WORKERS", "lots")
	err := Load(path, prefix, &c)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "workers" {
		t.Errorf("bad env value: err = %v, want FieldError for workers", err)
	}
}

func TestErrorf(t *testing.T) {
	err := Errorf("comet.tcp.addr", "must not be empty (got %q)", "")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "comet.tcp.addr" {
		t.Fatalf("err = %v", err)
	}
	if got, want := err.Error(), `config: comet.tcp.addr: must not be empty (got "")`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	sentinel := errors.New("sentinel")
	if !errors.Is(&FieldError{Field: "f", Err: sentinel}, sentinel) {
		t.Error("FieldError does not unwrap")
	}
}

func TestApplyEnvInline(t *testing.T) {
	type Inner struct {
		Addr string `yaml:"addr"`
	}
	type outer struct {
		Inner  `yaml:",inline"`
		Region string `yaml:"region"`
	}
	var c outer
	env := map[string]string{"P_ADDR": ":1", "P_REGION": "eu"}
	if err := ApplyEnv("P", &c, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":1" || c.Region != "eu" {
		t.Fatalf("inline env overrides: %+v", c)
	}
	if err := Decode([]byte("addr: \":2\"\nregion: us\n"), &c); err != nil || c.Addr != ":2" {
		t.Fatalf("inline decode: %+v %v", c, err)
	}
}
