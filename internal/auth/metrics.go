package auth

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// resultLabels maps each outcome to its metric label, in the order they are
// tested.
var resultLabels = [...]struct {
	err   error
	label string
}{
	{ErrBadRequest, "bad_request"},
	{ErrInvalidToken, "invalid_token"},
	{ErrExpired, "expired"},
	{ErrAudience, "audience"},
	{ErrSubjectMismatch, "subject_mismatch"},
	{ErrDenied, "denied"},
	{ErrUnavailable, "unavailable"},
}

const (
	resultOK    = "ok"
	resultOther = "other"
)

type metrics struct {
	results  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_auth_verifications_total",
			Help: "Connection authentications by mode and result.",
		}, []string{"mode", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hubuim_auth_verify_duration_seconds",
			Help:    "Time to verify one connection's credential.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs .. ~6.5s
		}, []string{"mode"}),
	}
	var err error
	if m.results, err = register(reg, m.results); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or reuses the collector already registered under
// the same name (several verifiers in one process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// instrumented counts outcomes of an inner verifier. Label children are
// resolved once so Verify does no lookups.
type instrumented struct {
	next     Verifier
	ok       prometheus.Counter
	other    prometheus.Counter
	failed   [len(resultLabels)]prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) wrap(mode string, v Verifier) Verifier {
	in := &instrumented{
		next:     v,
		ok:       m.results.WithLabelValues(mode, resultOK),
		other:    m.results.WithLabelValues(mode, resultOther),
		duration: m.duration.WithLabelValues(mode),
	}
	for i, r := range resultLabels {
		in.failed[i] = m.results.WithLabelValues(mode, r.label)
	}
	return in
}

func (in *instrumented) Verify(ctx context.Context, req *Request) (Identity, error) {
	start := time.Now()
	id, err := in.next.Verify(ctx, req)
	in.duration.Observe(time.Since(start).Seconds())
	if err == nil {
		in.ok.Inc()
		return id, nil
	}
	for i, r := range resultLabels {
		if errors.Is(err, r.err) {
			in.failed[i].Inc()
			return id, err
		}
	}
	in.other.Inc()
	return id, err
}
