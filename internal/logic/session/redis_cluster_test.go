package session_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/logic/session/sessiontest"
	"github.com/hubuim/hubuim/internal/testenv"
)

// clusterNodes is the number of masters of the throwaway cluster.
const clusterNodes = 3

// startRedisCluster starts a throwaway Redis Cluster of clusterNodes
// masters on free loopback ports and returns their addresses.
func startRedisCluster(t *testing.T) []string {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		testenv.NeedBinary(t, bin, "apt-get install redis-server")
	}
	var addrs []string
	for i := range clusterNodes {
		addrs = append(addrs, startClusterNode(t, i))
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		sessiontest.Eventually(t, 20*time.Second, "cluster_state:ok on "+a, func() bool {
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		_ = c.Close()
	}
	return addrs
}

// nodeStartAttempts bounds retries of a node whose free port was taken
// between probing and binding, or that exited at start.
const nodeStartAttempts = 3

// startClusterNode starts cluster node i on a free port and waits until it
// answers; a process that exits early is retried on another port.
func startClusterNode(t *testing.T, i int) string {
	t.Helper()
	var lastLog []byte
	for attempt := 0; attempt < nodeStartAttempts; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		dir := t.TempDir()
		logFile := filepath.Join(dir, "redis.log")
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", logFile,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(i)+".conf"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if c.Ping(context.Background()).Err() == nil {
				_ = c.Close()
				return addr
			}
			select {
			case <-exited:
				deadline = time.Now() // retry on another port
			case <-time.After(50 * time.Millisecond):
			}
		}
		_ = c.Close()
		lastLog, _ = os.ReadFile(logFile)
	}
	t.Fatalf("cluster node %d did not start in %d attempts; last log:\n%s", i, nodeStartAttempts, lastLog)
	return ""
}

// TestRedisClusterConformance runs the conformance suite over a real
// Redis Cluster: every script and pipeline must route by slot.
func TestRedisClusterConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	addrs := startRedisCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = c.Close() })
	// The suite's keys must really spread over several nodes. Cleanups run
	// after the parallel subtests, before the client is closed.
	t.Cleanup(func() {
		var withKeys atomic.Int32 // ForEachMaster calls concurrently
		_ = c.ForEachMaster(context.Background(), func(ctx context.Context, n *redis.Client) error {
			if n.DBSize(ctx).Val() > 0 {
				withKeys.Add(1)
			}
			return nil
		})
		if n := withKeys.Load(); n < 2 {
			t.Errorf("keys landed on %d of %d masters; the test did not exercise cross-slot routing", n, clusterNodes)
		}
	})
	sessiontest.Run(t, func(t *testing.T) session.Store {
		s, err := session.NewRedis(c, session.RedisConfig{Prefix: randomPrefix(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
