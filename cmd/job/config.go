package main

import (
	"github.com/hubuim/hubuim/internal/app/jobconf"
	"github.com/hubuim/hubuim/internal/discovery"
)

// The job's configuration lives in internal/app/jobconf (importable by the
// deploy checks); these names keep the command's code short.
const (
	EnvPrefix       = jobconf.EnvPrefix
	DefaultGroup    = jobconf.DefaultGroup
	DiscoveryStatic = jobconf.DiscoveryStatic
	DiscoveryEtcd   = jobconf.DiscoveryEtcd
)

type (
	// Config is configs/job.yaml.
	Config = jobconf.Config
	// DiscoveryConfig selects how comets are found.
	DiscoveryConfig = jobconf.DiscoveryConfig
)

// loadConfig reads path (may be empty) and the environment.
func loadConfig(path string) (Config, error) { return jobconf.Load(path) }

// staticComets parses "id=host:port" entries.
func staticComets(list []string) ([]discovery.Instance, error) { return jobconf.StaticComets(list) }
