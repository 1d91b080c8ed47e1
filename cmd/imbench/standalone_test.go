package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// startAttempts bounds the tries to start cmd/hubuim: a port freePort
// found free can be taken (by another test's client, as its ephemeral
// port) before hubuim binds it.
const startAttempts = 3

// standalone builds cmd/hubuim and runs it on free loopback ports; it
// returns the comet TCP, comet WS and logic HTTP addresses.
func standalone(t *testing.T) (tcp, ws, httpURL string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs cmd/hubuim")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hubuim")
	build := exec.Command("go", "build", "-o", bin, "github.com/hubuim/hubuim/cmd/hubuim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for attempt := 1; ; attempt++ {
		var busy bool
		tcp, ws, httpURL, busy = startStandalone(t, bin, filepath.Join(dir, "data"))
		if !busy {
			return tcp, ws, httpURL
		}
		if attempt == startAttempts {
			t.Fatalf("hubuim could not bind free ports in %d attempts", attempt)
		}
		t.Logf("attempt %d: a port was taken before hubuim bound it; retrying", attempt)
	}
}

// startStandalone runs bin on ports free a moment ago and waits until it
// serves; busy reports that it exited because a port was taken meanwhile.
func startStandalone(t *testing.T, bin, data string) (tcp, ws, httpURL string, busy bool) {
	t.Helper()
	tcp, ws = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	httpAddr := "127.0.0.1:" + freePort(t)
	cmd := exec.Command(bin, "-data", data)
	cmd.Env = append(os.Environ(),
		"HUBUIM_COMET_TCP_ADDR="+tcp, "HUBUIM_COMET_WS_ADDR="+ws,
		"HUBUIM_COMET_GRPC_ADDR=127.0.0.1:"+freePort(t),
		"HUBUIM_LOGIC_HTTP_ADDR="+httpAddr, "HUBUIM_LOGIC_GRPC_ADDR=127.0.0.1:"+freePort(t),
		"HUBUIM_ADMIN_ADDR=127.0.0.1:"+freePort(t))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	httpURL = "http://" + httpAddr
	ready := waitfor.Poll(30*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", tcp, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		resp, err := http.Get(httpURL + "/goim/online/total")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	select {
	case <-exited:
		if strings.Contains(logs.String(), "address already in use") {
			return "", "", "", true
		}
		t.Fatalf("hubuim exited:\n%s", logs.String())
	default:
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("hubuim logs:\n%s", logs.String())
		}
	})
	if !ready {
		t.Fatalf("hubuim not ready:\n%s", logs.String())
	}
	return tcp, ws, httpURL, false
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runJSON runs one scenario and decodes its JSON document into dst.
func runJSON(t *testing.T, dst any, args ...string) {
	t.Helper()
	var out bytes.Buffer
	err := run(append(args, "-json"), &out)
	if err != nil {
		t.Fatalf("imbench %v: %v\n%s", args, err, out.String())
	}
	i := bytes.IndexByte(out.Bytes(), '{')
	if i < 0 {
		t.Fatalf("no JSON in %s", out.String())
	}
	if err := json.Unmarshal(out.Bytes()[i:], dst); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
}

// TestScenariosAgainstStandalone runs every scenario briefly against a real
// standalone process: everything sent must arrive exactly once, in order.
func TestScenariosAgainstStandalone(t *testing.T) {
	tcp, ws, httpURL := standalone(t)
	common := []string{"-addr", tcp, "-ws-addr", ws, "-http", httpURL, "-timeout", "60s"}

	var chat chatResult
	runJSON(t, &chat, append([]string{"chat", "-pairs", "3", "-groups", "1", "-group-size", "3", "-rate", "200", "-count", "120", "-duration", "20s"}, common...)...)
	if chat.Acked != 120 || chat.Lost != 0 || chat.Duplicated != 0 || chat.OutOfOrder != 0 {
		t.Fatalf("chat: %+v", chat)
	}
	// 3 pairs send 1:1 (one receiver), 3 group members send to 2 others
	if chat.Expected < chat.Acked || chat.Delivered < chat.Expected || chat.AckLatency.Count != 120 {
		t.Fatalf("chat deliveries: %+v", chat)
	}

	for _, transport := range []string{"tcp", "ws"} {
		var push pushResult
		runJSON(t, &push, append([]string{"push", "-transport", transport, "-n", "20", "-per-push", "2", "-rate", "200", "-count", "100", "-duration", "20s"}, common...)...)
		if push.Pushed != 100 || push.Delivery.Delivered != 200 || push.Delivery.Missing != 0 || push.Delivery.Duplicates != 0 {
			t.Fatalf("push %s: %+v", transport, push)
		}
		var room roomResult
		runJSON(t, &room, append([]string{"room", "-transport", transport, "-n", "30", "-rate", "50", "-count", "20", "-duration", "20s", "-room", "bench://t" + transport}, common...)...)
		if room.Pushed != 20 || room.Delivery.Delivered != 600 || room.Delivery.Missing != 0 {
			t.Fatalf("room %s: %+v", transport, room)
		}
	}
	var keys pushResult
	runJSON(t, &keys, append([]string{"push", "-target", "keys", "-n", "5", "-rate", "100", "-count", "20", "-duration", "20s"}, common...)...)
	if keys.Delivery.Delivered != 20 || keys.Delivery.Missing != 0 {
		t.Fatalf("push by keys: %+v", keys)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{
		{},
		{"nope"},
		{"push", "-transport", "udp"},
		{"push", "-per-push", "5", "-n", "2"},
		{"room", "-room", "noscheme"},
		{"chat", "-pairs", "0", "-groups", "0"},
		{"conns", "-n", "0"},
		{"push", "extra"},
	} {
		if err := run(args, &out); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
