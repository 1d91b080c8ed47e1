package logic_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

const testSecret = "s3cret"

// record is one published record.
type record struct {
	topic string
	key   string
	msg   *pb.PushMsg
}

// fakeProducer records what is published; err makes Publish fail.
type fakeProducer struct {
	mu      sync.Mutex
	records []record
	err     error
}

func (p *fakeProducer) Publish(_ context.Context, topic string, key, value []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	m := new(pb.PushMsg)
	if err := proto.Unmarshal(value, m); err != nil {
		return err
	}
	p.records = append(p.records, record{topic: topic, key: string(key), msg: m})
	return nil
}

func (p *fakeProducer) Close() error { return nil }

func (p *fakeProducer) take() []record {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.records
	p.records = nil
	return r
}

// fakeVerifier trusts the mid, except for tokens naming an error.
type fakeVerifier struct{}

var tokenErrors = map[string]error{
	"bad":      auth.ErrInvalidToken,
	"expired":  auth.ErrExpired,
	"audience": auth.ErrAudience,
	"other":    auth.ErrSubjectMismatch,
	"deny":     &auth.DeniedError{Reason: "user 42 is banned"},
	"down":     auth.ErrUnavailable,
	"weird":    errors.New("something else"),
}

func (fakeVerifier) Verify(_ context.Context, req *auth.Request) (auth.Identity, error) {
	if err, ok := tokenErrors[req.Token]; ok {
		return auth.Identity{}, err
	}
	if req.Mid <= 0 {
		return auth.Identity{}, auth.ErrDenied
	}
	return auth.Identity{Mid: req.Mid}, nil
}

// fakeWatcher sends the lists given to set.
type fakeWatcher struct {
	ch chan []discovery.Instance
}

func newFakeWatcher() *fakeWatcher { return &fakeWatcher{ch: make(chan []discovery.Instance, 1)} }

func (w *fakeWatcher) Watch(ctx context.Context, service string) (<-chan []discovery.Instance, error) {
	if service != discovery.ServiceComet {
		return nil, errors.New("unexpected service " + service)
	}
	out := make(chan []discovery.Instance)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case l := <-w.ch:
				select {
				case out <- l:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// failingStore fails every call with session.ErrUnavailable.
type failingStore struct{}

var errStoreDown = errors.Join(session.ErrUnavailable, errors.New("connection refused"))

func (failingStore) Add(context.Context, session.Session, time.Duration) (session.AddResult, error) {
	return session.AddResult{}, errStoreDown
}
func (failingStore) Heartbeat(context.Context, session.Session, time.Duration) (session.HeartbeatResult, error) {
	return session.HeartbeatResult{}, errStoreDown
}
func (failingStore) Remove(context.Context, session.Session) (session.RemoveResult, error) {
	return session.RemoveResult{}, errStoreDown
}
func (failingStore) Servers(context.Context, []string) ([]string, error) { return nil, errStoreDown }
func (failingStore) Devices(context.Context, []int64) (map[int64][]session.Device, error) {
	return nil, errStoreDown
}
func (failingStore) SetRoomCounts(context.Context, string, map[string]int32, time.Duration) error {
	return errStoreDown
}
func (failingStore) RoomCounts(context.Context) (map[string]int32, error) { return nil, errStoreDown }
func (failingStore) ExpiredUsers(context.Context, int) ([]session.Expired, bool, error) {
	return nil, false, errStoreDown
}

type env struct {
	l        *logic.Logic
	store    session.Store
	producer *fakeProducer
	watcher  *fakeWatcher
	reg      *prometheus.Registry
}

// newEnv builds a Logic over store (Memory when nil) and runs it.
func newEnv(tb testing.TB, cfg logic.Config, store session.Store, handlers map[int32]logic.ReceiveHandler) *env {
	tb.Helper()
	return newEnvDeps(tb, cfg, store, logic.Deps{Handlers: handlers})
}

// newEnvDeps is newEnv with more Deps (store, verifier, producer, watcher
// and registerer are the env's).
func newEnvDeps(tb testing.TB, cfg logic.Config, store session.Store, deps logic.Deps) *env {
	tb.Helper()
	if store == nil {
		store = session.NewMemory()
	}
	if cfg.Push.Secret == "" && !cfg.Push.Unauthenticated {
		cfg.Push.Secret = testSecret
	}
	e := &env{store: store, producer: &fakeProducer{}, watcher: newFakeWatcher(), reg: prometheus.NewRegistry()}
	deps.Store, deps.Verifier, deps.Producer, deps.Watcher, deps.Registerer = store, fakeVerifier{}, e.producer, e.watcher, e.reg
	l, err := logic.New(cfg, deps)
	if err != nil {
		tb.Fatal(err)
	}
	e.l = l
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(context.Background()) }()
	tb.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return e
}

// grpcClient serves e's gRPC services on a random port.
func (e *env) grpcClient(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	e.l.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// metric finds a metric of e's registry by name and labels (nil: none).
func (e *env) metric(tb testing.TB, name string, labels map[string]string) *dto.Metric {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// counter reads a counter of e's registry by name and labels.
func (e *env) counter(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	return e.metric(tb, name, labels).GetCounter().GetValue()
}

// histCount reads the sample count of a histogram of e's registry by name
// and labels.
func (e *env) histCount(tb testing.TB, name string, labels map[string]string) uint64 {
	tb.Helper()
	return e.metric(tb, name, labels).GetHistogram().GetSampleCount()
}

func authBody(mid int64, key, token string) []byte {
	return fmt.Appendf(nil, `{"mid":%d,"key":%q,"room_id":"live://1","platform":"web","token":%q}`, mid, key, token)
}

// eventually polls cond until true or the deadline.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 15*time.Second, what, cond)
}
