package grpcmetrics

import (
	"context"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestInterceptors serves the health service through the server interceptor
// and calls it through the client interceptor: a successful and a failing
// call are counted and timed on both sides.
func TestInterceptors(t *testing.T) {
	reg := prometheus.NewRegistry()
	srvM, err := NewServer(reg)
	if err != nil {
		t.Fatal(err)
	}
	cliM, err := NewClient(reg)
	if err != nil {
		t.Fatal(err)
	}
	// A second server in the same process shares the registered metrics.
	srv2, err := NewServer(reg)
	if err != nil {
		t.Fatalf("second NewServer: %v", err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(srv2.UnaryServerInterceptor()))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(l.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(cliM.UnaryClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	ctx := context.Background()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("check unknown service: %v, want NotFound", err)
	}
	const svc, method = "grpc.health.v1.Health", "Check"
	for _, side := range []*Metrics{srvM, cliM} {
		for _, code := range []string{"OK", "NotFound"} {
			if got := counter(t, side.calls.WithLabelValues(svc, method, code)); got != 1 {
				t.Errorf("calls{%s} = %v, want 1", code, got)
			}
			var m dto.Metric
			if err := side.seconds.WithLabelValues(svc, method, code).(prometheus.Metric).Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetHistogram().GetSampleCount(); got != 1 {
				t.Errorf("histogram{%s} count = %d, want 1", code, got)
			}
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct{ in, svc, method string }{
		{"/hubuim.logic.Logic/Connect", "hubuim.logic.Logic", "Connect"},
		{"Connect", "unknown", "Connect"},
		{"", "unknown", ""},
	} {
		if s, m := split(tc.in); s != tc.svc || m != tc.method {
			t.Errorf("split(%q) = %q, %q; want %q, %q", tc.in, s, m, tc.svc, tc.method)
		}
	}
}

func counter(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
