package im

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/im/members"
)

// Metrics of the IM service. A nil *Metrics records nothing.
type Metrics struct {
	sends          *prometheus.CounterVec
	sendsByStatus  []prometheus.Counter // sends' children, by protocol.Status value
	sendSeconds    prometheus.Histogram
	dups           prometheus.Counter
	seqConflicts   prometheus.Counter
	seqJumps       prometheus.Counter
	publishFailure prometheus.Counter
	appendBatch    prometheus.Histogram
	phases         [numPhases]prometheus.Observer
	memberCache    *members.Metrics // the service's member cache: cache="logic"
}

// phase is a step of Send, measured by hubuim_im_send_phase_seconds.
type phase int

const (
	phaseDedup   phase = iota // dedup claim and seq allocation (one step)
	phaseSeq                  // message id (and a seq conflict retry's seq)
	phaseStore                // group commit: queue wait and AppendTouch
	phaseFinish               // dedup finish (queued, not awaited, on Redis)
	phasePublish              // publish of the message event
	numPhases
)

var phaseNames = [numPhases]string{"dedup_claim", "seq", "store", "dedup_finish", "publish"}

// NewMetrics creates the IM metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_im_sends_total", Help: "MsgSend requests by resulting status.",
		}, []string{"status"}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hubuim_im_send_ack_seconds", Help: "Time from MsgSend received to ACK ready (store-then-ACK).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		dups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_im_duplicate_sends_total", Help: "Resends answered with the original ACK.",
		}),
		seqConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_im_seq_conflicts_total", Help: "Appends retried because their seq was taken.",
		}),
		seqJumps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_im_seq_jumps_total", Help: "Seq counters re-created past the stored maximum.",
		}),
		publishFailure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_im_publish_failures_total", Help: "Stored messages whose live fan-out could not be published.",
		}),
		appendBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hubuim_im_append_batch_messages", Help: "Messages per group commit of the send path.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	m.sendsByStatus = make([]prometheus.Counter, len(protocol.Status_name))
	for v, name := range protocol.Status_name {
		if int(v) >= 0 && int(v) < len(m.sendsByStatus) {
			m.sendsByStatus[v] = m.sends.WithLabelValues(name)
		}
	}
	phases := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "hubuim_im_send_phase_seconds", Help: "Duration of the steps of a MsgSend.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
	}, []string{"phase"})
	for p := range m.phases {
		m.phases[p] = phases.WithLabelValues(phaseNames[p])
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sends, m.sendSeconds, m.dups, m.seqConflicts, m.seqJumps, m.publishFailure, m.appendBatch, phases} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	mc, err := members.NewMetrics(reg, "logic")
	if err != nil {
		return nil, err
	}
	m.memberCache = mc
	return m, nil
}

// memberCacheMetrics returns the member cache's metrics; nil for a nil m.
func (m *Metrics) memberCacheMetrics() *members.Metrics {
	if m == nil {
		return nil
	}
	return m.memberCache
}

// OnSeqJump counts a seq counter re-creation; pass it as
// SeqAllocatorConfig.OnJump.
func (m *Metrics) OnSeqJump(string, int64) {
	if m != nil {
		m.seqJumps.Inc()
	}
}

func (m *Metrics) observeSend(st protocol.Status, d time.Duration) {
	if m == nil {
		return
	}
	if int(st) >= 0 && int(st) < len(m.sendsByStatus) && m.sendsByStatus[st] != nil {
		m.sendsByStatus[st].Inc()
	} else {
		m.sends.WithLabelValues(st.String()).Inc()
	}
	if st == protocol.Status_STATUS_OK {
		m.sendSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) dup() {
	if m != nil {
		m.dups.Inc()
	}
}

func (m *Metrics) seqConflict() {
	if m != nil {
		m.seqConflicts.Inc()
	}
}

func (m *Metrics) publishFailed() {
	if m != nil {
		m.publishFailure.Inc()
	}
}

func (m *Metrics) observeAppendBatch(n int) {
	if m != nil {
		m.appendBatch.Observe(float64(n))
	}
}

// observePhase records the time since start as phase p and returns now.
func (m *Metrics) observePhase(p phase, start time.Time) time.Time {
	if m == nil {
		return start
	}
	now := time.Now()
	m.phases[p].Observe(now.Sub(start).Seconds())
	return now
}
