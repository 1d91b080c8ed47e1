package store

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// op indexes the per-operation metrics so that hot paths do no label lookup.
type op int

const (
	opAppend op = iota
	opAppendBatch
	opAppendTouch
	opRange
	opMaxSeq
	opGetByClientID
	opTouch
	opSetRead
	opSetDelivered
	opDelivered
	opConversation
	opConversations
	opCreateGroup
	opGroup
	opAddMembers
	opRemoveMembers
	opMembers
	opIsMember
	opMemberCount
	opGroups
	numOps
)

var opNames = [numOps]string{
	"append", "append_batch", "append_touch", "range", "max_seq", "get_by_client_id",
	"touch", "set_read", "set_delivered", "delivered", "conversation", "conversations",
	"create_group", "group", "add_members", "remove_members", "members", "is_member",
	"member_count", "groups",
}

// metrics are the Prometheus metrics of one store. A nil *metrics records
// nothing.
type metrics struct {
	dur  [numOps]prometheus.Observer
	errs [numOps]prometheus.Counter
}

// newMetrics registers the store metrics with reg under the label
// impl=<impl>. A nil reg returns nil (nothing recorded).
func newMetrics(reg prometheus.Registerer, impl string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "hubuim_store_op_duration_seconds",
		Help:        "Duration of message store operations.",
		ConstLabels: prometheus.Labels{"impl": impl},
		Buckets:     prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs .. ~6.5s
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "hubuim_store_op_errors_total",
		Help:        "Message store operations that failed (not found and invalid input excluded).",
		ConstLabels: prometheus.Labels{"impl": impl},
	}, []string{"op"})
	for _, c := range []prometheus.Collector{dur, errs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m := &metrics{}
	for i, name := range opNames {
		m.dur[i] = dur.WithLabelValues(name)
		m.errs[i] = errs.WithLabelValues(name)
	}
	return m, nil
}

// done records one operation that started at start.
func (m *metrics) done(o op, start time.Time, err error) {
	if m == nil {
		return
	}
	m.dur[o].Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) &&
		!errors.Is(err, ErrExists) && !errors.Is(err, ErrSeqConflict) {
		m.errs[o].Inc()
	}
}
