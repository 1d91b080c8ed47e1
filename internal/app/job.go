package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/job"
	"github.com/hubuim/hubuim/internal/mq"
)

// JobTopics are the topics a job consumer must subscribe to.
var JobTopics = []string{mq.TopicPush, mq.TopicMessage}

// JobConfig is a job's configuration.
type JobConfig struct {
	job.Config `yaml:",inline"`
	Fanout     im.FanoutConfig `yaml:"fanout"`
}

// JobDeps are a job's collaborators.
type JobDeps struct {
	Consumer mq.Consumer // subscribed to JobTopics
	Watcher  discovery.Watcher
	Dial     job.DialFunc // nil: gRPC
	// Devices and Members resolve the recipients of IM messages.
	Devices  im.DeviceLookup
	Members  im.MemberLister
	Notifier im.Notifier // nil: no offline notifications
	// MemberEvents applies the group membership changes logic publishes to
	// the fan-out's member cache at once; nil: within its TTL.
	MemberEvents MemberEvents
	Logger       *slog.Logger
	// Registerer registers metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// JobServer is a job: goim pushes and the IM fan-out.
type JobServer struct {
	job    *job.Job
	fan    *im.Fanout
	events MemberEvents // may be nil
	log    *slog.Logger
}

// NewJob builds a job.
func NewJob(cfg JobConfig, deps JobDeps) (*JobServer, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Devices == nil || deps.Members == nil {
		return nil, errors.New("app: job needs a device lookup and a member lister for the IM fan-out")
	}
	j, err := job.New(cfg.Config, job.Deps{
		Consumer: deps.Consumer, Watcher: deps.Watcher, Dial: deps.Dial, Logger: deps.Logger, Registerer: deps.Registerer,
	})
	if err != nil {
		return nil, err
	}
	fan, err := im.NewFanout(cfg.Fanout, im.FanoutDeps{
		Devices: deps.Devices, Members: deps.Members, Dispatcher: j, Notifier: deps.Notifier, Logger: deps.Logger,
		Registerer: deps.Registerer,
	})
	if err != nil {
		return nil, err
	}
	j.Handle(mq.TopicMessage, fan.Handle)
	return &JobServer{job: j, fan: fan, events: deps.MemberEvents, log: deps.Logger}, nil
}

// Run consumes until ctx ends, then flushes and stops.
func (s *JobServer) Run(ctx context.Context) error {
	s.log.Info("job running")
	// The member events outlive ctx until the fan-out has flushed: its
	// last records still read the member cache.
	ectx, stopEvents := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopEvents() // before wg.Wait
	if c := s.fan.MemberCache(); c != nil && s.events != nil {
		wg.Go(func() {
			if err := s.events.Run(ectx, c); err != nil {
				s.log.Error("job: member events", "err", err)
			}
		})
	}
	err := s.job.Run(ctx)
	s.fan.Wait() // the consumer stopped: its records' contexts are done
	stopEvents()
	if cerr := s.job.Close(); cerr != nil && !errors.Is(cerr, job.ErrClosed) {
		s.log.Warn("job: close", "err", cerr)
	}
	if errors.Is(err, job.ErrClosed) {
		err = nil
	}
	s.log.Info("job stopped")
	return err
}
