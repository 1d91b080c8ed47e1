package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// waitTimeout bounds every wait in these tests; they poll or block on
// events, never sleep.
const waitTimeout = 10 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newServer(tb testing.TB, cfg Config, deps Deps) *Server {
	tb.Helper()
	if deps.Logger == nil {
		deps.Logger = quietLogger()
	}
	s, err := New(cfg, deps)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

func get(tb testing.TB, h http.Handler, method, path string) (int, string) {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		cfg   Config
		field string
	}{
		{Config{Addr: "3901"}, "admin.addr"},
		{Config{Addr: "localhost"}, "admin.addr"},
		{Config{ReadyTimeout: -time.Second}, "admin.ready_timeout"},
		{Config{ShutdownTimeout: -1}, "admin.shutdown_timeout"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg, Deps{Logger: quietLogger()})
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("New(%+v) err = %v, want FieldError for %s", tt.cfg, err, tt.field)
		}
	}
}

func TestDefaults(t *testing.T) {
	s := newServer(t, Config{}, Deps{})
	if s.cfg.Addr != DefaultAddr || s.cfg.ReadyTimeout != DefaultReadyTimeout ||
		s.cfg.ShutdownTimeout != DefaultShutdownTimeout || s.cfg.Pprof {
		t.Errorf("defaults = %+v", s.cfg)
	}
	if s.Addr() != nil {
		t.Error("Addr is set before Listen")
	}
}

func TestHealthz(t *testing.T) {
	s := newServer(t, Config{}, Deps{Ready: func(context.Context) error { return errors.New("not me") }})
	code, body := get(t, s.Handler(), http.MethodGet, "/healthz")
	if code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz = %d %q, want 200 ok even when not ready", code, body)
	}
	if code, _ := get(t, s.Handler(), http.MethodHead, "/healthz"); code != http.StatusOK {
		t.Errorf("HEAD healthz = %d", code)
	}
	if code, _ := get(t, s.Handler(), http.MethodPost, "/healthz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST healthz = %d, want 405", code)
	}
	if code, _ := get(t, s.Handler(), http.MethodGet, "/nope"); code != http.StatusNotFound {
		t.Errorf("unknown path = %d, want 404", code)
	}
}

func TestReadyz(t *testing.T) {
	errDown := errors.New("redis: connection refused")
	var state error
	s := newServer(t, Config{}, Deps{Ready: func(context.Context) error { return state }})

	code, body := get(t, s.Handler(), http.MethodGet, "/readyz")
	if code != http.StatusOK || body != "ready\n" {
		t.Errorf("ready: %d %q", code, body)
	}
	state = errDown
	code, body = get(t, s.Handler(), http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, errDown.Error()) {
		t.Errorf("not ready: %d %q, want 503 with the reason", code, body)
	}
	state = nil
	if code, _ := get(t, s.Handler(), http.MethodGet, "/readyz"); code != http.StatusOK {
		t.Errorf("ready again: %d", code)
	}
}

func TestReadyzNilReadyIsReady(t *testing.T) {
	s := newServer(t, Config{}, Deps{})
	if code, _ := get(t, s.Handler(), http.MethodGet, "/readyz"); code != http.StatusOK {
		t.Errorf("readyz with no Ready func = %d, want 200", code)
	}
}

func TestReadyzBoundsTheCheck(t *testing.T) {
	// A check that hangs must not hang the probe: it gets a context with
	// ReadyTimeout and its error is reported.
	var sawDeadline bool
	s := newServer(t, Config{ReadyTimeout: time.Millisecond}, Deps{Ready: func(ctx context.Context) error {
		_, sawDeadline = ctx.Deadline()
		<-ctx.Done()
		return ctx.Err()
	}})
	code, body := get(t, s.Handler(), http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, context.DeadlineExceeded.Error()) {
		t.Errorf("hung check: %d %q", code, body)
	}
	if !sawDeadline {
		t.Error("Ready got a context without a deadline")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "hubuim_admintest_events_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s := newServer(t, Config{}, Deps{Gatherer: reg})
	code, body := get(t, s.Handler(), http.MethodGet, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "hubuim_admintest_events_total 3") {
		t.Errorf("metrics = %d:\n%s", code, body)
	}
	if strings.Contains(body, "go_goroutines") {
		t.Error("served the default registry instead of the given gatherer")
	}
}

func TestMetricsDefaultGatherer(t *testing.T) {
	s := newServer(t, Config{}, Deps{})
	code, body := get(t, s.Handler(), http.MethodGet, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("default gatherer: %d, go_goroutines missing", code)
	}
}

func TestPprof(t *testing.T) {
	off := newServer(t, Config{}, Deps{})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := get(t, off.Handler(), http.MethodGet, p); code != http.StatusNotFound {
			t.Errorf("pprof off: %s = %d, want 404", p, code)
		}
	}
	on := newServer(t, Config{Pprof: true}, Deps{})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
		if code, _ := get(t, on.Handler(), http.MethodGet, p); code != http.StatusOK {
			t.Errorf("pprof on: %s = %d, want 200", p, code)
		}
	}
}

// startRun runs s in the background and returns a channel with Run's result.
func startRun(tb testing.TB, s *Server, ctx context.Context) <-chan error {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return done
}

func waitRun(tb testing.TB, done <-chan error) error {
	tb.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		tb.Fatal("Run did not return")
		return nil
	}
}

func httpGet(tb testing.TB, url string) (int, error) {
	tb.Helper()
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestRunServesAndStopsOnContext(t *testing.T) {
	s := newServer(t, Config{Addr: "127.0.0.1:0"}, Deps{})
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr().String() != addr.String() {
		t.Errorf("Addr() = %v, Listen = %v", s.Addr(), addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startRun(t, s, ctx)

	// The listener is bound before Run, so the first request succeeds.
	if code, err := httpGet(t, "http://"+addr.String()+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("healthz over TCP: %d, %v", code, err)
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if _, err := net.DialTimeout("tcp", addr.String(), waitTimeout); err == nil {
		t.Error("still accepting after Run returned")
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestShutdownStopsRun(t *testing.T) {
	s := newServer(t, Config{Addr: "127.0.0.1:0"}, Deps{})
	done := startRun(t, s, context.Background())

	deadline := time.Now().Add(waitTimeout)
	for s.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Run never bound its listener")
		}
		time.Sleep(time.Millisecond)
	}
	url := "http://" + s.Addr().String() + "/readyz"
	if code, err := httpGet(t, url); err != nil || code != http.StatusOK {
		t.Fatalf("readyz over TCP: %d, %v", code, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run after Shutdown = %v, want nil", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestShutdownBeforeRun(t *testing.T) {
	s := newServer(t, Config{Addr: "127.0.0.1:0"}, Deps{})
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Errorf("Run after Shutdown = %v, want nil", err)
	}
	// The listener Listen opened was closed by Shutdown.
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Errorf("port still held after Shutdown: %v", err)
	} else {
		ln.Close()
	}
}

func TestRunPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s := newServer(t, Config{Addr: busy.Addr().String()}, Deps{})
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("Run on a busy port = %v, want an error naming the address", err)
	}
}
