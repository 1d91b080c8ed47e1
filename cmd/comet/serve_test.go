package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/app/apptest"
	"github.com/hubuim/hubuim/internal/app/cometconf"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/discovery"
)

// instances follows the comets registered in e's discovery.
type instances struct {
	mu   sync.Mutex
	last []discovery.Instance
}

func watchComets(t *testing.T, e *apptest.Env) *instances {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := e.Registry(t).Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	w := &instances{}
	go func() {
		for list := range ch {
			w.mu.Lock()
			w.last = list
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *instances) find(id string) (discovery.Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ins := range w.last {
		if ins.ID == id {
			return ins, true
		}
	}
	return discovery.Instance{}, false
}

// TestServeIM runs the command with the shipped config against the real
// services: the comet registers in etcd with its advertised addresses,
// finds logic there ("hubuim:///logic"), serves /readyz, carries a 1:1
// message between two users (delivered by a job that found the comet in
// etcd), and on cancel drains and leaves discovery.
func TestServeIM(t *testing.T) {
	e := apptest.NewEnv(t)
	e.StartLogic(t)
	e.StartJob(t)
	watch := watchComets(t, e)
	id := "comet-" + e.ID
	for k, v := range map[string]string{
		"ID":                  id,
		"TCP_ADDR":            "127.0.0.1:0",
		"WS_ADDR":             "127.0.0.1:0",
		"GRPC_ADDR":           "127.0.0.1:0",
		"ADMIN_ADDR":          "127.0.0.1:0",
		"ADVERTISE_HOST":      "127.0.0.1",
		"REGISTER_INTERVAL":   "100ms",
		"DRAIN_TIMEOUT":       "5s",
		"LOGIC_TARGET":        cometconf.DiscoveryTarget,
		"DISCOVERY_ENDPOINTS": strings.Join(e.Etcd, ","),
		"DISCOVERY_PREFIX":    e.DiscoveryPrefix(),
		"DISCOVERY_TTL":       "2s",
	} {
		t.Setenv(cometconf.EnvPrefix+"_"+k, v)
	}
	fc, err := cometconf.Load("../../configs/comet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type bound struct {
		a     comet.Addrs
		admin net.Addr
	}
	ready := make(chan bound, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, fc, e.Log, reg, reg, func(a comet.Addrs, adm net.Addr) { ready <- bound{a, adm} })
	}()
	var b bound
	select {
	case b = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(apptest.WaitTimeout):
		t.Fatal("serve did not start")
	}
	apptest.WaitReady(t, b.admin.String())

	var ins discovery.Instance
	apptest.WaitFor(t, "the comet in discovery", func() bool {
		var ok bool
		ins, ok = watch.find(id)
		return ok
	})
	_, tcpPort, _ := net.SplitHostPort(b.a.TCP)
	if ins.Addrs[discovery.AddrTCP] != net.JoinHostPort("127.0.0.1", tcpPort) || ins.Addrs[discovery.AddrGRPC] == "" || ins.Draining {
		t.Fatalf("registered %+v, bound %+v", ins, b.a)
	}

	alice, bob := apptest.Dial(t, 2001, b.a.TCP), apptest.Dial(t, 2002, b.a.TCP)
	apptest.WaitFor(t, "the live load in discovery", func() bool {
		ins, ok := watch.find(id)
		return ok && ins.Conns == 2
	})
	apptest.SendAndReceive(t, alice, bob)
	apptest.SendAndReceive(t, bob, alice)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(apptest.WaitTimeout):
		t.Fatal("serve did not stop")
	}
	apptest.WaitFor(t, "the comet to leave discovery", func() bool { _, ok := watch.find(id); return !ok })
	if s := apptest.ReadyStatus(b.admin.String()); s != 0 {
		t.Fatalf("admin still answers %d after stop", s)
	}
}

// TestReadyNeedsLogic: /readyz fails while no logic serves (a plain
// target nobody listens on).
func TestReadyNeedsLogic(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for k, v := range map[string]string{
		"TCP_ADDR": "127.0.0.1:0", "WS_ADDR": "", "GRPC_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0",
		"LOGIC_TARGET": dead, "ADMIN_READY_TIMEOUT": "200ms", "DRAIN_TIMEOUT": "2s",
	} {
		t.Setenv(cometconf.EnvPrefix+"_"+k, v)
	}
	fc, err := cometconf.Load("../../configs/comet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	adminc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, fc, apptest.Logger(), reg, reg, func(_ comet.Addrs, adm net.Addr) { adminc <- adm })
	}()
	var adm net.Addr
	select {
	case adm = <-adminc:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	if s := apptest.ReadyStatus(adm.String()); s != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without logic: %d, want 503", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}
