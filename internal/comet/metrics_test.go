package comet

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cometapi "github.com/hubuim/hubuim/api/comet"

	"github.com/hubuim/hubuim/api/protocol"
)

// TestIOMetrics checks the per-transport connection gauge and the frame and
// byte counters on both transports.
func TestIOMetrics(t *testing.T) {
	e := startServer(t, nil)
	for _, tc := range e.transports() {
		t.Run(tc.name, func(t *testing.T) {
			m := &e.s.m.byTransport[tWS]
			if tc.name == transportTCP {
				m = &e.s.m.byTransport[tTCP]
			}
			c := tc.dial(t, tc.addr)
			authBody, _ := json.Marshal(authBody{Mid: 1, Key: "metrics-" + tc.name})
			c.send(protocol.OpAuth, 1, authBody)
			c.expect(protocol.OpAuthReply)
			if got := value(t, m.conns); got != 1 {
				t.Fatalf("open connections = %v, want 1", got)
			}
			hb := []byte("ping")
			c.send(protocol.OpHeartbeat, 2, hb)
			c.expect(protocol.OpHeartbeatReply)
			if got := value(t, m.framesRead); got != 2 {
				t.Errorf("frames read = %v, want 2", got)
			}
			wantBytes := float64(2*protocol.HeaderLen + len(authBody) + len(hb))
			if got := value(t, m.bytesRead); got != wantBytes {
				t.Errorf("bytes read = %v, want %v", got, wantBytes)
			}
			// The reply is counted after the write returns: poll.
			eventually(t, "bytes written", func() bool {
				return value(t, m.bytesWritten) >= 2*protocol.HeaderLen
			})
			_ = c.nc.Close()
			eventually(t, "connection gauge back to 0", func() bool { return value(t, m.conns) == 0 })
		})
	}
	if got := value(t, e.s.m.byTransport[tWSS].framesRead); got != 0 {
		t.Errorf("wss frames read = %v, want 0", got)
	}
}

// value reads a counter or gauge.
func value(tb testing.TB, c prometheus.Metric) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}

// TestGRPCServerMetrics calls the comet's gRPC service and finds the call in
// the registry.
func TestGRPCServerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	lc := startLogic(t, &fakeLogic{onlineMul: 1})
	s, err := New(testConfig(), Deps{Logic: lc, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	cc, err := grpc.NewClient(s.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	if _, err := cometapi.NewCometClient(cc).Rooms(context.Background(), &cometapi.RoomsReq{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hubuim_grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lbl := map[string]string{}
			for _, lp := range m.GetLabel() {
				lbl[lp.GetName()] = lp.GetValue()
			}
			if lbl["method"] == "Rooms" && lbl["code"] == "OK" && m.GetCounter().GetValue() == 1 {
				return
			}
		}
	}
	t.Fatal("Rooms call not counted in hubuim_grpc_server_handled_total")
}
