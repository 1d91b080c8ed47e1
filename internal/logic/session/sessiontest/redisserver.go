package sessiontest

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStartWait bounds how long a throwaway redis-server may take to answer.
const redisStartWait = 10 * time.Second

// RedisServer is a throwaway redis-server owned by one test, for "Redis
// down" cases: Stop kills it, Start brings it back on the same port with
// an empty data set. The shared test Redis must never be stopped.
type RedisServer struct {
	tb   testing.TB
	port int
	cmd  *exec.Cmd
}

// StartRedisServer starts redis-server on a free loopback port (skipping
// the test when redis-server is not installed). It is killed at cleanup.
func StartRedisServer(tb testing.TB) *RedisServer {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &RedisServer{tb: tb, port: port}
	s.Start()
	return s
}

// Addr is host:port.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Start (re)starts the server on its port and waits until it answers.
func (s *RedisServer) Start() {
	s.tb.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.tb.TempDir())
	if err := cmd.Start(); err != nil {
		s.tb.Fatal(err)
	}
	s.cmd = cmd
	s.tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	Eventually(s.tb, redisStartWait, "redis-server to answer", func() bool {
		return c.Ping(context.Background()).Err() == nil
	})
}

// Stop kills the server.
func (s *RedisServer) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}
