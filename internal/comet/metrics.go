package comet

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/grpcmetrics"
)

// Label values. Counters for hot paths are bound once in newMetrics so that
// incrementing them never looks up labels.
const (
	transportTCP    = "tcp"
	transportTCPTLS = "tcp_tls"
	transportWS     = "ws"
	transportWSS    = "wss"
)

// transport indexes metrics.byTransport.
type transport int

const (
	tTCP transport = iota
	tTCPTLS
	tWS
	tWSS
	numTransports
)

var transportLabels = [numTransports]string{tTCP: transportTCP, tTCPTLS: transportTCPTLS, tWS: transportWS, tWSS: transportWSS}

// ioMetrics are one transport's label children, bound in newMetrics so that
// the read and write paths pay one atomic add per update.
type ioMetrics struct {
	conns        prometheus.Gauge
	framesRead   prometheus.Counter
	bytesRead    prometheus.Counter
	bytesWritten prometheus.Counter
}

type metrics struct {
	conns          *prometheus.GaugeVec
	clientIPs      prometheus.Gauge
	framesRead     *prometheus.CounterVec
	bytesRead      *prometheus.CounterVec
	bytesWritten   *prometheus.CounterVec
	byTransport    [numTransports]ioMetrics
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
	pollWakeups    prometheus.Counter
	deepWorkers    prometheus.Gauge
	deepFallbacks  prometheus.Counter
	receiveStreams prometheus.Gauge
	logicErrors    *prometheus.CounterVec
	grpc           *grpcmetrics.Metrics // the comet's gRPC server
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hubuim_comet_connections", Help: "Authenticated connections open on this comet, by transport.",
		}, []string{"transport"}),
		clientIPs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_comet_client_ips", Help: "Distinct client IP addresses of the authenticated connections open on this comet.",
		}),
		framesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_frames_read_total", Help: "Frames read from clients, by transport.",
		}, []string{"transport"}),
		bytesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_read_bytes_total", Help: "Frame bytes (header and body) read from clients, by transport.",
		}, []string{"transport"}),
		bytesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_written_bytes_total", Help: "Bytes of queued frames successfully written to clients, by transport.",
		}, []string{"transport"}),
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
		pollWakeups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_tcp_poller_wakeups_total", Help: "Readers started by the TCP poller for parked (idle, goroutine-less) connections that became readable.",
		}),
		deepWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_comet_deep_workers", Help: "Deep-stack worker goroutines running (they make the readers' logic calls and WebSocket frame reads).",
		}),
		deepFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_comet_deep_worker_fallbacks_total", Help: "Deep calls run on a short-lived goroutine because all deep_workers were busy.",
		}),
		receiveStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_comet_logic_receive_streams", Help: "ReceiveStreams open to logic (they carry the client frames logic handles).",
		}),
		logicErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_comet_logic_errors_total", Help: "Failed calls to logic, by method.",
		}, []string{"method"}),
	}
	for t, l := range transportLabels {
		m.byTransport[t] = ioMetrics{
			conns:        m.conns.WithLabelValues(l),
			framesRead:   m.framesRead.WithLabelValues(l),
			bytesRead:    m.bytesRead.WithLabelValues(l),
			bytesWritten: m.bytesWritten.WithLabelValues(l),
		}
	}
	var err error
	if m.grpc, err = grpcmetrics.NewServer(reg); err != nil {
		return nil, err
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.conns, m.clientIPs, m.framesRead, m.bytesRead, m.bytesWritten, m.accepted, m.authFailures, m.protoErrors, m.kicks,
		m.slowConsumers, m.pushed, m.roomMsgs, m.broadcastMsgs, m.roomQueueFull, m.writeErrors,
		m.writes, m.framesCoalesce, m.pollWakeups, m.deepWorkers, m.deepFallbacks, m.receiveStreams, m.logicErrors}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
