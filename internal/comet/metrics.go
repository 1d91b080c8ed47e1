package comet

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values. Counters for hot paths are bound once in newMetrics so that
// incrementing them never looks up labels.
const (
	transportTCP    = "tcp"
	transportTCPTLS = "tcp_tls"
	transportWS     = "ws"
	transportWSS    = "wss"
)

type metrics struct {
	conns          prometheus.Gauge
	accepted       *prometheus.CounterVec
	authFailures   *prometheus.CounterVec
	protoErrors    *prometheus.CounterVec
	kicks          *prometheus.CounterVec
	slowConsumers  prometheus.Counter
	pushed         prometheus.Counter
	roomMsgs       prometheus.Counter
	broadcastMsgs  prometheus.Counter
	roomQueueFull  prometheus.Counter
	writeErrors    prometheus.Counter
	writes         prometheus.Counter
	framesCoalesce prometheus.Counter
	logicErrors    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_comet_connections", Help: "Authenticated connections open on this comet.",
		}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_connections_accepted_total", Help: "Connections accepted, by transport.",
		}, []string{"transport"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_auth_failures_total", Help: "Connections closed before authentication completed, by reason.",
		}, []string{"reason"}),
		protoErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_protocol_errors_total", Help: "Connections closed for a protocol violation, by reason.",
		}, []string{"reason"}),
		kicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_kicks_total", Help: "Kick frames sent, by reason.",
		}, []string{"reason"}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_slow_consumers_total", Help: "Connections closed because their outbound queue exceeded its byte bound.",
		}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_push_messages_total", Help: "Messages queued to connections by PushMsg.",
		}),
		roomMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_room_messages_total", Help: "Messages queued to connections by room broadcasts.",
		}),
		broadcastMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_broadcast_messages_total", Help: "Messages queued to connections by Broadcast.",
		}),
		roomQueueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_room_queue_full_total", Help: "Room broadcasts refused because a bucket's room worker queue was full.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_write_errors_total", Help: "Connection writes that failed (the connection is closed).",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_writes_total", Help: "Coalesced writes to connections.",
		}),
		framesCoalesce: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_written_frames_total", Help: "Frames written to connections (frames/writes is the coalescing factor).",
		}),
		logicErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_logic_errors_total", Help: "Failed calls to logic, by method.",
		}, []string{"method"}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.conns, m.accepted, m.authFailures, m.protoErrors, m.kicks,
		m.slowConsumers, m.pushed, m.roomMsgs, m.broadcastMsgs, m.roomQueueFull, m.writeErrors,
		m.writes, m.framesCoalesce, m.logicErrors}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
