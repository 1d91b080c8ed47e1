// Package cometconf is the configuration file of the comet service
// (configs/comet.yaml, environment prefix HUBUIM_COMET): app.CometConfig
// (comet.Config plus what the comet registers in discovery) inline, and the
// logic_tls, discovery and admin sections. It is importable so that tools
// (deploy checks) load the same file with the same rules as cmd/comet.
package cometconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
)

// EnvPrefix prefixes every environment override (HUBUIM_COMET_TCP_ADDR).
const EnvPrefix = comet.EnvPrefix

// Defaults of FileConfig (also written in configs/comet.yaml).
const (
	DefaultLogicTarget = "127.0.0.1:3119"
	DefaultAdminAddr   = admin.CometAddr
	// DiscoveryTarget is the logic_target that finds the logics in
	// discovery (round robin over every registered logic).
	DiscoveryTarget = discovery.Scheme + ":///" + discovery.ServiceLogic
)

// FileConfig is configs/comet.yaml.
type FileConfig struct {
	// CometConfig: the comet's listeners and limits, and advertise_host,
	// region, zone, lat, lon, weight, register_interval for discovery.
	app.CometConfig `yaml:",inline"`
	// LogicTLS secures the gRPC client to logic (needed when logic runs
	// with tls.cert_file; with its client_ca_file, give a certificate).
	LogicTLS LogicTLSConfig `yaml:"logic_tls"`
	// Discovery registers this comet (the node list, job's fan-out) and,
	// with logic_target "hubuim:///logic", finds the logics. Empty
	// endpoints: not registered, and logic_target must be an address.
	Discovery discovery.EtcdConfig `yaml:"discovery"`
	// Admin serves /metrics, /healthz and /readyz (not draining, logic
	// reachable). Addr default admin.CometAddr (":3901").
	Admin admin.Config `yaml:"admin"`
}

// LogicTLSConfig is the comet's TLS client configuration towards logic.
type LogicTLSConfig struct {
	// Enabled turns TLS on; the other fields are optional. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile verifies logic's certificate; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile: the client certificate for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in logic's certificate.
	ServerName string `yaml:"server_name"`
}

// Load returns the client TLS configuration, nil when TLS is off.
func (c LogicTLSConfig) Load() (*tls.Config, error) {
	if !c.Enabled {
		if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
			return nil, config.Errorf("logic_tls.enabled", "files are set but TLS is not enabled")
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, config.Errorf("logic_tls.ca_file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, config.Errorf("logic_tls.ca_file", "no PEM certificate found")
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, config.Errorf("logic_tls.cert_file", "cert_file and key_file go together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, config.Errorf("logic_tls.cert_file", "%v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// UsesDiscovery reports whether logic_target is resolved through
// discovery.
func (c FileConfig) UsesDiscovery() bool {
	return strings.HasPrefix(c.LogicTarget, discovery.Scheme+":")
}

// Load reads the file at path (empty: defaults and environment only) over
// comet.DefaultConfig, applies HUBUIM_COMET_* overrides, fills the defaults
// of this level and checks what the constructors do not.
func Load(path string) (FileConfig, error) {
	fc := FileConfig{CometConfig: app.CometConfig{Config: comet.DefaultConfig()}}
	if err := config.Load(path, EnvPrefix, &fc); err != nil {
		return fc, err
	}
	if fc.LogicTarget == "" {
		fc.LogicTarget = DefaultLogicTarget
	}
	if fc.DrainTimeout == 0 {
		fc.DrainTimeout = comet.DefaultDrainTimeout
	}
	if fc.Admin.Addr == "" {
		fc.Admin.Addr = DefaultAdminAddr
	}
	if fc.UsesDiscovery() {
		if len(fc.Discovery.Endpoints) == 0 {
			return fc, config.Errorf("logic_target", "%q needs discovery.endpoints; without discovery give logic's address", fc.LogicTarget)
		}
		if fc.LogicTarget != DiscoveryTarget {
			return fc, config.Errorf("logic_target", "%q: the discovery target is %q", fc.LogicTarget, DiscoveryTarget)
		}
	}
	if fc.Weight < 0 {
		return fc, config.Errorf("weight", "must not be negative")
	}
	if fc.RegisterInterval < 0 {
		return fc, config.Errorf("register_interval", "must not be negative")
	}
	return fc, nil
}
