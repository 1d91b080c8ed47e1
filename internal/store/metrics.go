package store

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
	opSyncPage
	numOps
)

var opNames = [numOps]string{
	"append", "append_batch", "append_touch", "range", "max_seq", "get_by_client_id",
	"touch", "set_read", "set_delivered", "delivered", "conversation", "conversations",
	"create_group", "group", "add_members", "remove_members", "members", "is_member",
	"member_count", "groups", "sync_page",
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

// poolCollector exports a pgx pool's statistics at scrape time.
type poolCollector struct {
	pool                           *pgxpool.Pool
	acquired, idle, total, max     *prometheus.Desc
	emptyAcquires, acquireDuration *prometheus.Desc
}

func newPoolCollector(pool *pgxpool.Pool) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, nil)
	}
	return &poolCollector{
		pool:            pool,
		acquired:        d("hubuim_store_pool_acquired_connections", "PostgreSQL pool connections currently in use."),
		idle:            d("hubuim_store_pool_idle_connections", "PostgreSQL pool connections currently idle."),
		total:           d("hubuim_store_pool_connections", "PostgreSQL pool connections open (acquired, idle and being built)."),
		max:             d("hubuim_store_pool_max_connections", "PostgreSQL pool size limit."),
		emptyAcquires:   d("hubuim_store_pool_empty_acquires_total", "Acquires that waited because the PostgreSQL pool had no idle connection."),
		acquireDuration: d("hubuim_store_pool_acquire_seconds_total", "Total time spent acquiring PostgreSQL pool connections."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.emptyAcquires, c.acquireDuration} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.acquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.emptyAcquires, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.acquireDuration, prometheus.CounterValue, s.AcquireDuration().Seconds())
}
