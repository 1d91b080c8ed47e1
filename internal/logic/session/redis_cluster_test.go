package session_test

import (
	"context"
	"net"
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
)

// clusterNodes is the number of masters of the throwaway cluster.
const clusterNodes = 3

// startRedisCluster starts a throwaway Redis Cluster of clusterNodes
// masters on free loopback ports and returns their addresses.
func startRedisCluster(t *testing.T) []string {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skip(bin + " not installed")
		}
	}
	var addrs []string
	for i := range clusterNodes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		dir := t.TempDir()
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(i)+".conf"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		sessiontest.Eventually(t, 10*time.Second, "cluster node to answer", func() bool { return c.Ping(context.Background()).Err() == nil })
		_ = c.Close()
		addrs = append(addrs, addr)
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
