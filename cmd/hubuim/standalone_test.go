package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/testenv/waitfor"
	"github.com/hubuim/hubuim/pkg/client"
)

const (
	testOp      = 1000
	waitTimeout = 30 * time.Second // generous: CI runs packages in parallel with -race
)

type running struct {
	s      *standalone
	cancel context.CancelFunc
	done   chan error
	comet  string // 127.0.0.1:port of comet TCP
	http   string // base URL of logic HTTP
}

func testConfig(dir string) Config {
	c := defaultConfig()
	c.DataDir = dir
	c.Comet.TCPAddr = "127.0.0.1:0"
	c.Comet.WSAddr = "127.0.0.1:0"
	c.Comet.GRPCAddr = "127.0.0.1:0"
	c.Comet.DrainTimeout = 5 * time.Second
	c.Logic.HTTPAddr = "127.0.0.1:0"
	c.Logic.GRPCAddr = "127.0.0.1:0"
	c.Logic.ShutdownTimeout = 5 * time.Second
	c.Admin.Addr = "127.0.0.1:0"
	return c
}

func startStandalone(t *testing.T, dir string) *running {
	t.Helper()
	return startStandaloneWith(t, testConfig(dir))
}

func startStandaloneWith(t *testing.T, cfg Config) *running {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.run(ctx) }()
	_, port, _ := net.SplitHostPort(s.comet.Server().Addrs().TCP)
	r.comet = "127.0.0.1:" + port
	r.http = "http://" + s.logic.HTTPAddr()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.s.close()
	r.cancel = nil
}

func dial(t *testing.T, r *running, mid int64, cursors map[string]int64) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Addrs: []string{r.comet}, Mid: mid, Accepts: []int32{testOp}, Cursors: cursors,
		SendTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// next returns the next event matching keep, failing after waitTimeout.
func next[T client.Event](t *testing.T, c *client.Client, keep func(T) bool) T {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if e, ok := ev.(T); ok && (keep == nil || keep(e)) {
				return e
			}
		case <-deadline:
			var zero T
			t.Fatalf("no %T event within %v", zero, waitTimeout)
		}
	}
}

func post(t *testing.T, url, body string) string {
	t.Helper()
	resp, err := http.Post(url, "application/octet-stream", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"code":0`) {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, raw)
	}
	return string(raw)
}

func TestStandaloneEndToEnd(t *testing.T) {
	dir := t.TempDir()
	r := startStandalone(t, dir)
	alice := dial(t, r, 1, nil)
	bob := dial(t, r, 2, nil)
	ctx := context.Background()

	// 1:1 messages arrive once each, in seq order.
	const n = 20
	for i := 1; i <= n; i++ {
		ack, err := alice.Send(ctx, client.User(2), 0, []byte(fmt.Sprintf("m%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Seq != int64(i) {
			t.Fatalf("ack %d has seq %d", i, ack.Seq)
		}
	}
	for i := 1; i <= n; i++ {
		m := next[client.Message](t, bob, nil)
		if m.Msg.Seq != int64(i) || string(m.Msg.Payload) != fmt.Sprintf("m%d", i) || m.Msg.Sender != 1 {
			t.Fatalf("bob's message %d = seq %d %q from %d", i, m.Msg.Seq, m.Msg.Payload, m.Msg.Sender)
		}
	}

	// Business pushes through the goim HTTP API.
	post(t, fmt.Sprintf("%s/goim/push/mids?operation=%d&mids=2", r.http, testOp), "to bob")
	if p := next[client.Push](t, bob, nil); p.Op != testOp || string(p.Body) != "to bob" {
		t.Fatalf("push = %d %q", p.Op, p.Body)
	}
	if err := bob.ChangeRoom(ctx, "live://7"); err != nil {
		t.Fatal(err)
	}
	post(t, fmt.Sprintf("%s/goim/push/room?operation=%d&type=live&room=7", r.http, testOp), "to the room")
	if p := next[client.Push](t, bob, func(p client.Push) bool { return string(p.Body) == "to the room" }); p.Op != testOp {
		t.Fatalf("room push op %d", p.Op)
	}

	// A group created over the client HTTP API gets messages.
	req, _ := http.NewRequest(http.MethodPost, r.http+"/im/v1/groups", strings.NewReader(`{"name":"g","members":[2]}`))
	req.Header.Set("X-Hubuim-Mid", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("create group: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := alice.Send(ctx, client.Group(1), 0, []byte("hi group")); err != nil {
		t.Fatal(err)
	}
	if m := next[client.Message](t, bob, nil); m.Msg.ConvId != "g:1" || string(m.Msg.Payload) != "hi group" {
		t.Fatalf("group message = %v", m.Msg)
	}
	// Removed from the group, bob gets its messages no more — at once: the
	// job's fan-out shares logic's member cache, which the removal cleared.
	req, _ = http.NewRequest(http.MethodDelete, r.http+"/im/v1/groups/1/members/2", nil)
	req.Header.Set("X-Hubuim-Mid", "1")
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("remove member: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := alice.Send(ctx, client.Group(1), 0, []byte("after removal")); err != nil {
		t.Fatal(err)
	}
	marker, err := alice.Send(ctx, client.User(2), 0, []byte("marker"))
	if err != nil {
		t.Fatal(err)
	}
	if m := next[client.Message](t, bob, nil); m.Msg.ConvId != "s:1:2" || string(m.Msg.Payload) != "marker" {
		t.Fatalf("bob, removed from the group, got %s %q", m.Msg.ConvId, m.Msg.Payload)
	}

	// Restart on the same data directory: history survives and seq only
	// grows (the in-memory counter restarts past the stored maximum).
	cursors := bob.Cursors()
	alice.Close()
	bob.Close()
	r.stop()
	r2 := startStandalone(t, dir)
	alice2 := dial(t, r2, 1, nil)
	ack, err := alice2.Send(ctx, client.User(2), 0, []byte("after restart"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq <= marker.Seq {
		t.Fatalf("seq after restart = %d, want > %d", ack.Seq, marker.Seq)
	}
	// Bob reconnects with his cursors and gets exactly the new message.
	bob2 := dial(t, r2, 2, cursors)
	if m := next[client.Message](t, bob2, nil); m.Msg.Seq != ack.Seq || string(m.Msg.Payload) != "after restart" {
		t.Fatalf("bob after restart got seq %d %q", m.Msg.Seq, m.Msg.Payload)
	}
	sync := post(t, r2.http+"/im/v1/sync?mid=2", `{"convId":"s:1:2","limit":100}`)
	if got := strings.Count(sync, `"clientMsgId"`); got != n+2 {
		t.Fatalf("HTTP sync after restart returned %d messages, want %d", got, n+2)
	}
}

// metric sums the samples of name whose labels contain every one of
// labels ("k=\"v\"") in a Prometheus text exposition.
func metric(body, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		sum += v
	}
	return sum
}

func scrape(t *testing.T, r *running) string {
	t.Helper()
	resp, err := http.Get("http://" + r.s.admin.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Metrics move as expected after a scripted connect, send, push and
// disconnect, and readiness reports the draining comet.
func TestStandaloneMetricsAndReadiness(t *testing.T) {
	r := startStandalone(t, t.TempDir())
	alice := dial(t, r, 1, nil)
	bob := dial(t, r, 2, nil)
	if _, err := alice.Send(context.Background(), client.User(2), 0, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	next[client.Message](t, bob, nil)
	post(t, fmt.Sprintf("%s/goim/push/mids?operation=%d&mids=2", r.http, testOp), "push")
	next[client.Push](t, bob, nil)
	bob.Close()

	var failed []string // the checks failing at the last scrape, reported
	moved := waitfor.Poll(waitTimeout, func() bool {
		body := scrape(t, r)
		checks := map[string]bool{
			"connections accepted":      metric(body, "hubuim_comet_connections_accepted_total") >= 2,
			"one connection left":       metric(body, "hubuim_comet_connections") == 1,
			"one message sent":          metric(body, "hubuim_im_sends_total", `status="STATUS_OK"`) == 1,
			"send to ACK latency":       metric(body, "hubuim_im_send_ack_seconds_count") == 1,
			"job pushes (msg and push)": metric(body, "hubuim_job_pushes_total") >= 2,
			"queue records produced":    metric(body, "hubuim_mq_produced_records_total") >= 2,
			"pushes written by comet":   metric(body, "hubuim_comet_push_messages_total") >= 2,
		}
		failed = nil
		for what, ok := range checks {
			if !ok {
				failed = append(failed, what)
			}
		}
		return len(failed) == 0
	})
	if !moved {
		t.Fatalf("metrics did not move: %v", failed)
	}

	ready := func() int {
		resp, err := http.Get("http://" + r.s.admin.Addr().String() + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("readyz = %d while serving", code)
	}
}

// A port already in use is a clear error, not a crash, and releases what
// was opened (the data directory's lock).
func TestStartFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Comet.TCPAddr = busy.Addr().String()
	if _, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("start on a busy port succeeded")
	}
	r := startStandalone(t, dir) // the store was closed: it opens again
	r.stop()
}

// The offline push hook works in the standalone mode too: a message for a
// user with no online device is POSTed to notify.webhook_url (it was only
// wired in cmd/job).
func TestStandaloneOfflineWebhook(t *testing.T) {
	got := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("Authorization") + " " + string(b)
	}))
	defer hook.Close()
	cfg := testConfig(t.TempDir())
	cfg.Notify.WebhookURL, cfg.Notify.WebhookSecret = hook.URL, "hook-secret"
	r := startStandaloneWith(t, cfg)
	alice := dial(t, r, 1, nil)
	if _, err := alice.Send(context.Background(), client.User(3), 0, []byte("are you there")); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-got:
		if !strings.HasPrefix(body, "Bearer hook-secret ") || !strings.Contains(body, `"user":3`) || !strings.Contains(body, `"conv_id":"s:1:3"`) {
			t.Fatalf("webhook got %s", body)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no offline notification")
	}

	bad := testConfig(t.TempDir())
	bad.Notify.Topic = "default"
	if _, err := start(bad, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("a notification topic was accepted without Kafka")
	}
}
