package discovery_test

import (
	"context"
	"net"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/discovery/discoverytest"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// fakeServer is a gRPC server counting the calls it serves.
type fakeServer struct {
	testpb.UnimplementedTestServiceServer
	addr   string
	calls  atomic.Int64
	health *health.Server
}

func (s *fakeServer) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	s.calls.Add(1)
	return &testpb.Empty{}, nil
}

func startFakeServer(tb testing.TB) *fakeServer {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer()
	fs := &fakeServer{addr: l.Addr().String()}
	testpb.RegisterTestServiceServer(gs, fs)
	fs.health = discovery.RegisterHealth(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(l)
	}()
	tb.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return fs
}

func logicInstance(id string, s *fakeServer) discovery.Instance {
	return discovery.Instance{ID: id, Service: discovery.ServiceLogic, Region: "r1", Weight: 3,
		Addrs: map[string]string{discovery.AddrGRPC: s.addr}}
}

// callUntil makes calls until ok holds or the deadline passes.
func callUntil(tb testing.TB, client testpb.TestServiceClient, what string, ok func() bool) {
	tb.Helper()
	waitfor.Until(tb, discoverytest.Timeout, what, func() bool {
		if ok() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = client.EmptyCall(ctx, &testpb.Empty{})
		return false
	})
}

// allTo checks that the next n calls all reach s, after the switch (calls
// to the others stop) has happened within the deadline.
func allTo(tb testing.TB, client testpb.TestServiceClient, n int, s *fakeServer, others ...*fakeServer) {
	tb.Helper()
	waitfor.Until(tb, discoverytest.Timeout, "the calls to all move to "+s.addr, func() bool {
		before := s.calls.Load()
		var othersBefore int64
		for _, o := range others {
			othersBefore += o.calls.Load()
		}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = client.EmptyCall(ctx, &testpb.Empty{})
			cancel()
		}
		var othersAfter int64
		for _, o := range others {
			othersAfter += o.calls.Load()
		}
		return s.calls.Load()-before == int64(n) && othersAfter == othersBefore
	})
}

func TestResolverStatic(t *testing.T) {
	testResolver(t, discovery.NewStatic())
}

func TestResolverEtcd(t *testing.T) {
	testResolver(t, newEtcd(t, discovery.EtcdConfig{}))
}

func testResolver(t *testing.T, reg discovery.Registry) {
	defer reg.Close()
	ctx := context.Background()
	s1, s2 := startFakeServer(t), startFakeServer(t)
	r1, err := reg.Register(ctx, logicInstance("l1", s1))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := reg.Register(ctx, logicInstance("l2", s2))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(discovery.Scheme+":///"+discovery.ServiceLogic,
		grpc.WithResolvers(discovery.NewResolverBuilder(reg, nil)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(discovery.ServiceConfig))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	start := time.Now()
	step := func(name string) { t.Logf("%v %s", time.Since(start).Round(time.Millisecond), name) }

	// Spread over both.
	callUntil(t, client, "calls on both servers", func() bool { return s1.calls.Load() >= 10 && s2.calls.Load() >= 10 })
	step("round robin")
	// Round robin: once both are ready, calls alternate.
	b1, b2 := s1.calls.Load(), s2.calls.Load()
	for range 100 {
		if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	if d1, d2 := s1.calls.Load()-b1, s2.calls.Load()-b2; d1 < 40 || d2 < 40 {
		t.Fatalf("100 calls split %d/%d, want about even", d1, d2)
	}

	step("deregister")
	// Deregistering one moves every call to the other.
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	allTo(t, client, 50, s2, s1)

	step("re-register")
	// Back, then the other drains.
	r1, err = reg.Register(ctx, logicInstance("l1", s1))
	if err != nil {
		t.Fatal(err)
	}
	callUntil(t, client, "l1 back", func() bool { return s1.calls.Load() > b1+100 })
	step("draining")
	draining := logicInstance("l2", s2)
	draining.Draining = true
	if err := r2.Update(ctx, draining); err != nil {
		t.Fatal(err)
	}
	allTo(t, client, 50, s1, s2)

	step("health")
	// Client-side health checking: NOT_SERVING is skipped.
	if err := r2.Update(ctx, logicInstance("l2", s2)); err != nil {
		t.Fatal(err)
	}
	b2 = s2.calls.Load()
	callUntil(t, client, "l2 back", func() bool { return s2.calls.Load() > b2 })
	step("not serving")
	s1.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	allTo(t, client, 50, s2, s1)
	s1.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	step("no instance")
	// No instance at all: calls fail with Unavailable.
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var callErr error
	failing := waitfor.Poll(discoverytest.Timeout, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, callErr = client.EmptyCall(cctx, &testpb.Empty{})
		c := status.Code(callErr)
		return c == codes.Unavailable || c == codes.DeadlineExceeded
	})
	if !failing {
		t.Fatalf("calls still succeed with no instance: %v", callErr)
	}
	step("recovery")
	// And back from nothing.
	if _, err := reg.Register(ctx, logicInstance("l1", s1)); err != nil {
		t.Fatal(err)
	}
	allTo(t, client, 10, s1, s2)
}

// Closing the client stops the resolver's watch.
func TestResolverCloseStopsWatch(t *testing.T) {
	s := discovery.NewStatic()
	defer s.Close()
	srv := startFakeServer(t)
	if _, err := s.Register(context.Background(), logicInstance("l1", srv)); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	conn, err := grpc.NewClient(discovery.Scheme+":///"+discovery.ServiceLogic,
		grpc.WithResolvers(discovery.NewResolverBuilder(s, nil)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(discovery.ServiceConfig))
	if err != nil {
		t.Fatal(err)
	}
	client := testpb.NewTestServiceClient(conn)
	if _, err := client.EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}

func TestEndpoints(t *testing.T) {
	list := []discovery.Instance{
		{ID: "a", Region: "r1", Zone: "z", Weight: 2, Addrs: map[string]string{discovery.AddrGRPC: "h:1"}},
		{ID: "b", Addrs: map[string]string{discovery.AddrTCP: "h:2"}},
		{ID: "c", Draining: true, Addrs: map[string]string{discovery.AddrGRPC: "h:3"}},
		{ID: "d", Addrs: map[string]string{discovery.AddrGRPC: "h:4"}},
	}
	eps := discovery.Endpoints(list)
	if len(eps) != 2 || eps[0].Addresses[0].Addr != "h:1" || eps[1].Addresses[0].Addr != "h:4" {
		t.Fatalf("Endpoints = %+v, want h:1 and h:4", eps)
	}
	info, ok := discovery.InfoFromEndpoint(eps[0])
	if want := (discovery.EndpointInfo{ID: "a", Region: "r1", Zone: "z", Weight: 2}); !ok || info != want {
		t.Fatalf("InfoFromEndpoint = %+v, %v; want %+v", info, ok, want)
	}
}

func TestResolverBadTarget(t *testing.T) {
	s := discovery.NewStatic()
	defer s.Close()
	conn, err := grpc.NewClient(discovery.Scheme+":///",
		grpc.WithResolvers(discovery.NewResolverBuilder(s, nil)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return // rejected at once: fine
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := testpb.NewTestServiceClient(conn).EmptyCall(ctx, &testpb.Empty{}); err == nil {
		t.Fatal("call on an empty service name succeeded")
	}
}

// fakeClientConn records the states a resolver pushes.
type fakeClientConn struct {
	resolver.ClientConn // unused methods panic
	states              chan resolver.State
}

func (f *fakeClientConn) UpdateState(s resolver.State) error {
	f.states <- s
	return nil
}

func (f *fakeClientConn) ReportError(error) {}

// Load updates do not reach the balancer; address changes do.
func TestResolverSkipsLoadUpdates(t *testing.T) {
	s := discovery.NewStatic()
	defer s.Close()
	ctx := context.Background()
	ins := discoverytest.Ins(discovery.ServiceLogic, "l1")
	reg, err := s.Register(ctx, ins)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse("hubuim:///logic")
	if err != nil {
		t.Fatal(err)
	}
	cc := &fakeClientConn{states: make(chan resolver.State, 16)}
	r, err := discovery.NewResolverBuilder(s, nil).Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	next := func() resolver.State {
		t.Helper()
		select {
		case st := <-cc.states:
			return st
		case <-time.After(discoverytest.Timeout):
			t.Fatal("no state")
			return resolver.State{}
		}
	}
	if st := next(); len(st.Endpoints) != 1 || st.Endpoints[0].Addresses[0].Addr != ins.Addrs[discovery.AddrGRPC] {
		t.Fatalf("first state %+v", st)
	}
	for i := range 5 {
		ins.Conns = int64(i)
		if err := reg.Update(ctx, ins); err != nil {
			t.Fatal(err)
		}
	}
	ins.Addrs = map[string]string{discovery.AddrGRPC: "127.0.0.1:9"}
	if err := reg.Update(ctx, ins); err != nil {
		t.Fatal(err)
	}
	if st := next(); len(st.Endpoints) != 1 || st.Endpoints[0].Addresses[0].Addr != "127.0.0.1:9" {
		t.Fatalf("state after address change %+v, want the new address (load updates skipped)", st)
	}
}
