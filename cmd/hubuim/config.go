package main

import (
	"time"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/job"
	"github.com/hubuim/hubuim/internal/mq"
)

// envPrefix prefixes the environment overrides (HUBUIM_DATA_DIR,
// HUBUIM_COMET_TCP_ADDR, HUBUIM_LOGIC_HTTP_ADDR, ...).
const envPrefix = "HUBUIM"

// Standalone defaults: goim's ports; everything but the client listeners
// on loopback, since the push API is unauthenticated here.
const (
	defaultDataDir   = "hubuim-data"
	defaultCometID   = "standalone"
	loopback         = "127.0.0.1"
	defaultAdminAddr = loopback + ":3900"
	standaloneSettle = 2 * time.Second
)

// Config is the standalone process's configuration (an optional YAML file
// plus HUBUIM_* environment overrides). Every section is the same type the
// distributed services use.
type Config struct {
	// DataDir keeps what must survive a restart (messages, groups,
	// conversation index; seq counters restart past the stored maximum).
	// Default "hubuim-data" under the working directory.
	DataDir string `yaml:"data_dir"`

	Comet  app.CometConfig `yaml:"comet"`
	Logic  app.LogicConfig `yaml:"logic"`
	Job    job.Config      `yaml:"job"`
	Fanout im.FanoutConfig `yaml:"fanout"`
	// Notify is the offline push hook: messages for users with no online
	// device are POSTed to notify.webhook_url (as cmd/job does). A
	// notification topic needs Kafka: not in the standalone mode.
	Notify app.NotifyConfig `yaml:"notify"`
	Queue  mq.MemoryConfig  `yaml:"queue"`
	Auth   auth.Config      `yaml:"auth"`
	Admin  admin.Config     `yaml:"admin"`
}

// defaultConfig is what `hubuim` runs with no flags.
func defaultConfig() Config {
	var c Config
	c.DataDir = defaultDataDir
	c.Comet.ID = defaultCometID
	c.Comet.TCPAddr = ":3101"
	c.Comet.WSAddr = ":3102"
	c.Comet.GRPCAddr = loopback + ":3109"
	c.Comet.AdvertiseHost = loopback
	c.Logic.ID = "standalone"
	c.Logic.HTTPAddr = loopback + ":3111"
	c.Logic.GRPCAddr = loopback + ":3119"
	c.Logic.AdvertiseHost = loopback
	c.Logic.Push.Unauthenticated = true
	// One process, no clock skew between replicas, millisecond stores: a
	// seq jump after a restart is settled (and skipped by clients) after
	// standaloneSettle instead of the distributed default.
	c.Logic.IM.SettleTime = standaloneSettle
	c.Auth.Mode = auth.ModeInsecure
	c.Admin.Addr = defaultAdminAddr
	return c
}

// loadConfig reads path (may be empty) over the defaults and applies the
// environment.
func loadConfig(path string) (Config, error) {
	c := defaultConfig()
	if err := config.Load(path, envPrefix, &c); err != nil {
		return c, err
	}
	if c.DataDir == "" {
		return c, config.Errorf("data_dir", "must not be empty")
	}
	if c.Notify.Topic != "" {
		return c, config.Errorf("notify.topic", "needs Kafka (the distributed mode); use notify.webhook_url")
	}
	return c, nil
}
