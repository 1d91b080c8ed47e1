package cometconf

import (
	"errors"
	"testing"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
)

const shipped = "../../../configs/comet.yaml"

// TestShippedConfig: configs/comet.yaml decodes strictly, its defaults
// are the code's, and environment overrides reach every level.
func TestShippedConfig(t *testing.T) {
	fc, err := Load(shipped)
	if err != nil {
		t.Fatal(err)
	}
	def := comet.DefaultConfig()
	for name, ok := range map[string]bool{
		"tcp_addr":             fc.TCPAddr == def.TCPAddr,
		"ws_addr":              fc.WSAddr == def.WSAddr,
		"grpc_addr":            fc.GRPCAddr == def.GRPCAddr,
		"logic_target":         fc.LogicTarget == DefaultLogicTarget,
		"logic_timeout":        fc.LogicTimeout == comet.DefaultLogicTimeout,
		"buckets":              fc.Buckets == comet.DefaultBuckets,
		"max_queue_bytes":      fc.MaxQueueBytes == comet.DefaultMaxQueueBytes,
		"drain_timeout":        fc.DrainTimeout == comet.DefaultDrainTimeout,
		"weight":               fc.Weight == 1,
		"register_interval":    fc.RegisterInterval == app.DefaultRegisterInterval,
		"discovery.endpoints":  len(fc.Discovery.Endpoints) == 0,
		"discovery.prefix":     fc.Discovery.Prefix == discovery.DefaultEtcdPrefix,
		"discovery.ttl":        fc.Discovery.TTL == discovery.DefaultEtcdTTL,
		"discovery.retry_min":  fc.Discovery.RetryMin == discovery.DefaultEtcdRetryMin,
		"admin.addr":           fc.Admin.Addr == admin.CometAddr,
		"admin.ready_timeout":  fc.Admin.ReadyTimeout == admin.DefaultReadyTimeout,
		"logic_tls.enabled":    !fc.LogicTLS.Enabled,
		"advertise_host empty": fc.AdvertiseHost == "",
	} {
		if !ok {
			t.Errorf("configs/comet.yaml %s differs from the code's default", name)
		}
	}
	t.Setenv(EnvPrefix+"_ADVERTISE_HOST", "10.0.0.7")
	t.Setenv(EnvPrefix+"_BUCKETS", "64")
	t.Setenv(EnvPrefix+"_DISCOVERY_ENDPOINTS", "a:2379,b:2379")
	t.Setenv(EnvPrefix+"_LOGIC_TARGET", DiscoveryTarget)
	fc, err = Load(shipped)
	if err != nil {
		t.Fatal(err)
	}
	if fc.AdvertiseHost != "10.0.0.7" || fc.Buckets != 64 || len(fc.Discovery.Endpoints) != 2 || !fc.UsesDiscovery() {
		t.Fatalf("env overrides not applied: %+v", fc)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		env   map[string]string
		field string
	}{
		{map[string]string{"LOGIC_TARGET": DiscoveryTarget}, "logic_target"},
		{map[string]string{"LOGIC_TARGET": "hubuim:///job", "DISCOVERY_ENDPOINTS": "a:1"}, "logic_target"},
		{map[string]string{"WEIGHT": "-1"}, "weight"},
		{map[string]string{"REGISTER_INTERVAL": "-1s"}, "register_interval"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(EnvPrefix+"_"+k, v)
			}
			_, err := Load(shipped)
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Load = %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

func TestLogicTLS(t *testing.T) {
	if tc, err := (LogicTLSConfig{}).Load(); tc != nil || err != nil {
		t.Fatalf("off: %v, %v", tc, err)
	}
	if _, err := (LogicTLSConfig{CAFile: "x"}).Load(); err == nil {
		t.Fatal("files without enabled accepted")
	}
	if _, err := (LogicTLSConfig{Enabled: true, CAFile: "/nonexistent"}).Load(); err == nil {
		t.Fatal("missing CA accepted")
	}
	if _, err := (LogicTLSConfig{Enabled: true, CertFile: "c"}).Load(); err == nil {
		t.Fatal("cert without key accepted")
	}
	tc, err := (LogicTLSConfig{Enabled: true, ServerName: "logic"}).Load()
	if err != nil || tc.ServerName != "logic" || tc.RootCAs != nil {
		t.Fatalf("enabled: %v, %v", tc, err)
	}
}
