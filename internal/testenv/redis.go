package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// redisStartTimeout bounds how long a private redis-server takes to answer.
const redisStartTimeout = 10 * time.Second

// RedisServer is a private redis-server a test may stop and restart (on
// the same port, with its data gone, as after a crash without
// persistence).
type RedisServer struct {
	Addr string
	tb   testing.TB
	port int
	cmd  *exec.Cmd
}

// StartRedis starts a private redis-server on a free loopback port. It
// needs the redis-server binary: skipped locally without it, failed in CI.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	NeedBinary(tb, "redis-server", "apt-get install redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &RedisServer{tb: tb, port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) on its port and waits until it answers.
func (r *RedisServer) Start() {
	r.tb.Helper()
	if r.cmd != nil {
		return
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(redisStartTimeout)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			buf := make([]byte, 7)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			r.tb.Fatalf("redis-server on %s did not answer within %v", r.Addr, redisStartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server; everything it held is lost.
func (r *RedisServer) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
