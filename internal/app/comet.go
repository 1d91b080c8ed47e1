package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/discovery"
)

// DefaultRegisterInterval is how often a comet republishes its load.
const DefaultRegisterInterval = 5 * time.Second

// CometConfig is a comet's configuration: the comet package's own, plus
// what it registers in discovery.
type CometConfig struct {
	comet.Config `yaml:",inline"`

	// AdvertiseHost is the host clients and job reach this comet at.
	// Default: the hostname; a wildcard bound host is replaced by it.
	AdvertiseHost string  `yaml:"advertise_host"`
	Region        string  `yaml:"region"`
	Zone          string  `yaml:"zone"`
	Lat           float64 `yaml:"lat"`
	Lon           float64 `yaml:"lon"`
	// Weight scales how many clients the node list sends here. Default 1.
	Weight int `yaml:"weight"`
	// RegisterInterval is how often the live connection count and the
	// distinct client IP count are republished. Default 5s.
	RegisterInterval time.Duration `yaml:"register_interval"`
}

// CometDeps are a comet's collaborators.
type CometDeps struct {
	Logic      logicpb.LogicClient
	Registrar  discovery.Registrar // nil: not registered
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ObserveLogicCall records the Receive calls multiplexed on streams
	// (comet.Deps.ObserveLogicCall); may be nil.
	ObserveLogicCall func(fullMethod string, start time.Time, err error)
}

// CometServer is a comet with its discovery registration.
type CometServer struct {
	cfg  CometConfig
	deps CometDeps
	log  *slog.Logger
	srv  *comet.Server
}

// NewComet builds a comet; Start binds its listeners.
func NewComet(cfg CometConfig, deps CometDeps) (*CometServer, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if cfg.AdvertiseHost == "" {
		cfg.AdvertiseHost = hostname()
	}
	if cfg.Weight == 0 {
		cfg.Weight = 1
	}
	if cfg.RegisterInterval == 0 {
		cfg.RegisterInterval = DefaultRegisterInterval
	}
	if cfg.Weight < 0 || cfg.RegisterInterval < 0 {
		return nil, errors.New("app: comet weight and register_interval must not be negative")
	}
	srv, err := comet.New(cfg.Config, comet.Deps{Logic: deps.Logic, Logger: deps.Logger, Registerer: deps.Registerer, ObserveLogicCall: deps.ObserveLogicCall})
	if err != nil {
		return nil, err
	}
	return &CometServer{cfg: cfg, deps: deps, log: deps.Logger, srv: srv}, nil
}

// Server is the comet itself.
func (c *CometServer) Server() *comet.Server { return c.srv }

// Start binds the listeners.
func (c *CometServer) Start() error { return c.srv.Start() }

// Instance is what this comet publishes in discovery.
func (c *CometServer) Instance() discovery.Instance {
	a := c.srv.Addrs()
	addrs := map[string]string{}
	for kind, bound := range map[string]string{
		discovery.AddrTCP: a.TCP, discovery.AddrWS: a.WS, discovery.AddrWSS: a.WSS,
		discovery.AddrTCPTLS: a.TCPTLS, discovery.AddrGRPC: a.GRPC,
	} {
		if bound != "" {
			addrs[kind] = advertise(c.cfg.AdvertiseHost, bound)
		}
	}
	return discovery.Instance{
		ID: c.srv.Config().ID, Service: discovery.ServiceComet,
		Region: c.cfg.Region, Zone: c.cfg.Zone, Lat: c.cfg.Lat, Lon: c.cfg.Lon, Weight: c.cfg.Weight,
		Addrs: addrs, Conns: c.srv.Conns(), IPs: c.srv.IPCount(), Draining: c.srv.Draining(),
	}
}

// Run serves until ctx ends, then drains: it marks itself draining in
// discovery first (the node list stops offering it), then shuts the comet
// down within its drain timeout. Start must have been called.
func (c *CometServer) Run(ctx context.Context) error {
	var reg discovery.Registration
	if c.deps.Registrar != nil {
		var err error
		if reg, err = c.deps.Registrar.Register(ctx, c.Instance()); err != nil {
			c.log.Error("comet: register in discovery", "err", err)
		}
	}
	c.log.Info("comet serving", "id", c.srv.Config().ID, "addrs", c.srv.Addrs())
	t := time.NewTicker(c.cfg.RegisterInterval)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
			if reg != nil {
				if err := reg.Update(ctx, c.Instance()); err != nil {
					c.log.Warn("comet: update registration", "err", err)
				}
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.srv.Config().DrainTimeout)
	defer cancel()
	if reg != nil {
		ins := c.Instance()
		ins.Draining = true
		if err := reg.Update(sctx, ins); err != nil {
			c.log.Warn("comet: mark draining", "err", err)
		}
	}
	err := c.srv.Shutdown(sctx)
	if reg != nil {
		if cerr := reg.Close(sctx); cerr != nil {
			c.log.Warn("comet: deregister", "err", cerr)
		}
	}
	c.log.Info("comet stopped")
	return err
}
