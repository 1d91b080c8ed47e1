// Package grpcmetrics times unary gRPC calls for Prometheus: a server
// interceptor for the services a process serves and a client interceptor
// for the calls it makes.
package grpcmetrics

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/hubuim/hubuim/internal/promreg"
)

// Metrics holds one side's (server or client) histogram and counter.
type Metrics struct {
	seconds *prometheus.HistogramVec
	calls   *prometheus.CounterVec
}

var labels = []string{"service", "method", "code"}

// NewServer returns the server-side metrics
// hubuim_grpc_server_handling_seconds and hubuim_grpc_server_handled_total,
// registered on reg (nil: not registered; already registered: shared).
func NewServer(reg prometheus.Registerer) (*Metrics, error) {
	return newMetrics(reg, "hubuim_grpc_server_handling_seconds", "hubuim_grpc_server_handled_total", "Unary RPCs served")
}

// NewClient returns the client-side metrics
// hubuim_grpc_client_handling_seconds and hubuim_grpc_client_handled_total,
// registered on reg (nil: not registered; already registered: shared).
func NewClient(reg prometheus.Registerer) (*Metrics, error) {
	return newMetrics(reg, "hubuim_grpc_client_handling_seconds", "hubuim_grpc_client_handled_total", "Unary RPCs made")
}

func newMetrics(reg prometheus.Registerer, secondsName, totalName, help string) (*Metrics, error) {
	m := &Metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    secondsName,
			Help:    help + ": latency by service, method and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs .. 26s
		}, labels),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: totalName,
			Help: help + ", by service, method and status code.",
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.seconds, err = promreg.Shared(reg, m.seconds)
	if err != nil {
		return nil, err
	}
	m.calls, err = promreg.Shared(reg, m.calls)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// UnaryServerInterceptor observes every unary call the server handles.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		m.observe(info.FullMethod, start, err)
		return resp, err
	}
}

// UnaryClientInterceptor observes every unary call made through a client
// connection.
func (m *Metrics) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		m.observe(method, start, err)
		return err
	}
}

// Observe records one call of fullMethod ("/pkg.Service/Method") that
// began at start and ended with err, as the interceptors do: for calls
// that do not go through them (e.g. calls multiplexed on a stream).
func (m *Metrics) Observe(fullMethod string, start time.Time, err error) {
	m.observe(fullMethod, start, err)
}

func (m *Metrics) observe(fullMethod string, start time.Time, err error) {
	service, method := split(fullMethod)
	code := status.Code(err).String()
	m.seconds.WithLabelValues(service, method, code).Observe(time.Since(start).Seconds())
	m.calls.WithLabelValues(service, method, code).Inc()
}

// split turns "/pkg.Service/Method" into its service and method.
func split(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
