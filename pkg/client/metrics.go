package client

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the client's Prometheus metrics, shared by every client
// given the same *Metrics. A nil *Metrics counts nothing.
type Metrics struct {
	connects        prometheus.Counter
	connectFailures prometheus.Counter
	disconnects     prometheus.Counter
	sends           prometheus.Counter
	resends         prometheus.Counter
	received        prometheus.Counter
	duplicates      prometheus.Counter
	pulls           prometheus.Counter
	cursorRounds    prometheus.Counter
	skipped         prometheus.Counter
	acks            prometheus.Counter
	presenceStale   prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered). Create it once per process and share it.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "hubuim_client_" + name, Help: help})
	}
	m := &Metrics{
		connects:        c("connects_total", "Authenticated connections."),
		connectFailures: c("connect_failures_total", "Connection rounds in which no address could be dialed and authenticated."),
		disconnects:     c("disconnects_total", "Connections that ended."),
		sends:           c("sends_total", "Messages given to Send."),
		resends:         c("resends_total", "MsgSend frames sent again for lack of an ACK."),
		received:        c("messages_received_total", "Messages delivered to the app (after dedup and ordering)."),
		duplicates:      c("messages_duplicate_total", "Inbound messages dropped as duplicates."),
		pulls:           c("pulls_total", "Sync requests for one conversation (gaps, notices, more)."),
		cursorRounds:    c("cursor_sync_rounds_total", "Cursor syncs sent again because the reply left moved conversations out (more_convs)."),
		skipped:         c("seqs_skipped_total", "Seqs the server could not return and the client moved past."),
		acks:            c("delivered_acks_total", "Delivered acks (op 23) sent, coalesced per conversation."),
		presenceStale:   c("presence_stale_total", "Presence events dropped because a later change of the same user arrived first."),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.connects, m.connectFailures, m.disconnects, m.sends,
			m.resends, m.received, m.duplicates, m.pulls, m.cursorRounds, m.skipped, m.acks, m.presenceStale} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("client: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) inc(c func(*Metrics) prometheus.Counter) {
	if m != nil {
		c(m).Inc()
	}
}

func (m *Metrics) add(c func(*Metrics) prometheus.Counter, n int) {
	if m != nil && n > 0 {
		c(m).Add(float64(n))
	}
}

func mConnects(m *Metrics) prometheus.Counter        { return m.connects }
func mConnectFailures(m *Metrics) prometheus.Counter { return m.connectFailures }
func mDisconnects(m *Metrics) prometheus.Counter     { return m.disconnects }
func mSends(m *Metrics) prometheus.Counter           { return m.sends }
func mResends(m *Metrics) prometheus.Counter         { return m.resends }
func mReceived(m *Metrics) prometheus.Counter        { return m.received }
func mDuplicates(m *Metrics) prometheus.Counter      { return m.duplicates }
func mPulls(m *Metrics) prometheus.Counter           { return m.pulls }
func mCursorRounds(m *Metrics) prometheus.Counter    { return m.cursorRounds }
func mSkipped(m *Metrics) prometheus.Counter         { return m.skipped }
func mAcks(m *Metrics) prometheus.Counter            { return m.acks }
func mPresenceStale(m *Metrics) prometheus.Counter   { return m.presenceStale }
