// Package admin is the operations HTTP server every HubuIM service runs on
// its admin port: Prometheus metrics on /metrics, liveness on /healthz,
// readiness on /readyz and, when enabled, Go profiles on /debug/pprof/.
//
// It is kept apart from the service's public ports so that scraping and
// probes never compete with client traffic and pprof is never exposed on a
// public listener by accident.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrRunning is returned by Run when the server is already running or was
// shut down: a Server serves once.
var ErrRunning = errors.New("admin: server already running or shut down")

// Server is the admin HTTP server.
type Server struct {
	cfg    Config
	ready  func(context.Context) error
	log    *slog.Logger
	srv    *http.Server
	runMu  sync.Mutex
	ran    bool
	lnMu   sync.Mutex
	ln     net.Listener
	closed bool
}

// New checks cfg, fills its defaults and builds the server. Nothing listens
// until Listen or Run.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ready: deps.Ready, log: deps.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "admin")
	gatherer := deps.Gatherer
	if gatherer == nil {
		gatherer = prometheus.DefaultGatherer
	}
	s.srv = &http.Server{
		Handler:           s.routes(gatherer),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) routes(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Handler returns the server's routes, for embedding or tests.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
		err := s.ready(ctx)
		cancel()
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = fmt.Fprintln(w, "ready")
}

// Listen binds the configured address if that has not happened yet and
// returns the bound address (useful with port 0). Run calls it.
func (s *Server) Listen() (net.Addr, error) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return nil, http.ErrServerClosed
	}
	if s.ln == nil {
		ln, err := net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("admin: listen %s: %w", s.cfg.Addr, err)
		}
		s.ln = ln
	}
	return s.ln.Addr(), nil
}

// Addr is the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run listens (unless Listen already did) and serves until ctx ends or
// Shutdown is called, then stops gracefully within Config.ShutdownTimeout.
// It returns nil after a clean stop.
func (s *Server) Run(ctx context.Context) error {
	s.runMu.Lock()
	if s.ran {
		s.runMu.Unlock()
		return ErrRunning
	}
	s.ran = true
	s.runMu.Unlock()

	addr, err := s.Listen()
	if errors.Is(err, http.ErrServerClosed) {
		return nil // Shutdown came first
	}
	if err != nil {
		return err
	}
	s.log.Info("admin listening", "addr", addr.String(), "pprof", s.cfg.Pprof)

	var wg sync.WaitGroup
	stopped := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
			defer cancel()
			if err := s.Shutdown(sctx); err != nil {
				s.log.Warn("admin shutdown", "err", err)
			}
		case <-stopped:
		}
	})
	err = s.srv.Serve(s.ln)
	close(stopped)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		s.log.Info("admin stopped")
		return nil
	}
	return fmt.Errorf("admin: serve: %w", err)
}

// Shutdown stops accepting, waits for in-flight requests until ctx ends,
// and makes Run return. It is safe to call more than once and before Run.
func (s *Server) Shutdown(ctx context.Context) error {
	s.lnMu.Lock()
	s.closed = true
	ln := s.ln
	s.lnMu.Unlock()
	err := s.srv.Shutdown(ctx)
	if ln != nil {
		// Serve may not have started yet; close the listener ourselves so
		// a Listen-without-Run does not leak the socket.
		_ = ln.Close()
	}
	return err
}
