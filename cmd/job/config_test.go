package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hubuim/hubuim/internal/config"
)

func TestShippedConfigLoads(t *testing.T) {
	cfg, err := loadConfig(filepath.Join("..", "..", "configs", "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Group != DefaultGroup || cfg.Discovery.Type != DiscoveryStatic || len(cfg.Kafka.Brokers) == 0 {
		t.Fatalf("unexpected shipped config: %+v", cfg)
	}
}

func TestEnvOverride(t *testing.T) {
	t.Setenv("HUBUIM_JOB_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("HUBUIM_JOB_DISCOVERY_COMETS", "c1=127.0.0.1:3109,c2=127.0.0.1:4109")
	t.Setenv("HUBUIM_JOB_JOB_WORKERS", "7")
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Kafka.Brokers) != 2 || cfg.Job.Workers != 7 {
		t.Fatalf("env not applied: %+v", cfg)
	}
	list, err := staticComets(cfg.Discovery.Comets)
	if err != nil || len(list) != 2 || list[1].ID != "c2" {
		t.Fatalf("comets = %v, %v", list, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, field string }{
		{"discovery:\n  type: zookeeper\n", "discovery.type"},
		{"discovery:\n  comets: [\"nohost\"]\n", "discovery.comets[0]"},
		{"discovery:\n  comets: [\"a=1.2.3.4:1\", \"a=1.2.3.4:2\"]\n", "discovery.comets[1]"},
	} {
		p := filepath.Join(t.TempDir(), "job.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(p)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%q: err = %v, want FieldError on %s", tc.yaml, err, tc.field)
		}
	}
	p := filepath.Join(t.TempDir(), "job.yaml")
	_ = os.WriteFile(p, []byte("nonsense_key: 1\n"), 0o600)
	if _, err := loadConfig(p); err == nil {
		t.Error("unknown key accepted")
	}
}
