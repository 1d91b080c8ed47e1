package logicconf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/config"
)

const minimal = "redis: {addrs: [\"r:6379\"]}\nkafka: {brokers: [\"k:9092\"]}\npostgres: {dsn: \"postgres://x@h/db\"}\n"

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "logic.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaults(t *testing.T) {
	fc, err := Load(write(t, minimal))
	if err != nil {
		t.Fatal(err)
	}
	if fc.Admin.Addr != admin.LogicAddr || fc.HTTPAddr != DefaultHTTPAddr || fc.GRPCAddr != DefaultGRPCAddr ||
		fc.Auth.Mode != DefaultAuthMode || fc.ID == "" || fc.Redis.Prefix == "" {
		t.Fatalf("defaults not filled: %+v", fc)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ body, field string }{
		{"kafka: {brokers: [\"k:9092\"]}\npostgres: {dsn: \"d\"}\n", "redis.addrs"},
		{"redis: {addrs: [\"r:6379\"]}\npostgres: {dsn: \"d\"}\n", "kafka.brokers"},
		{"redis: {addrs: [\"r:6379\"]}\nkafka: {brokers: [\"k:9092\"]}\n", "postgres.dsn"},
		{minimal + "idgen: {worker_id: 1024}\n", "idgen.worker_id"},
		{minimal + "seq_ttl: -1s\n", "seq_ttl"},
	} {
		_, err := Load(write(t, tc.body))
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%q: %v, want an error naming %s", tc.body, err, tc.field)
		}
	}
	if _, err := Load(write(t, minimal+"unknown_key: 1\n")); err == nil {
		t.Error("unknown key accepted")
	}
}
