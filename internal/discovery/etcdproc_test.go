package discovery_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// etcdProc is a throwaway etcd server of one test, restartable on the same
// ports and data directory.
type etcdProc struct {
	dir, client, peer string
	cmd               *exec.Cmd
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startEtcdProc starts an etcd of its own, or skips the test when there is
// no etcd binary (failing in CI).
func startEtcdProc(tb testing.TB) *etcdProc {
	tb.Helper()
	testenv.NeedBinary(tb, "etcd", "apt-get install etcd-server")
	p := &etcdProc{dir: tb.TempDir(), client: freeAddr(tb), peer: freeAddr(tb)}
	p.start(tb)
	tb.Cleanup(p.kill)
	return p
}

func (p *etcdProc) start(tb testing.TB) {
	tb.Helper()
	logf, err := os.OpenFile(filepath.Join(p.dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer logf.Close()
	client, peer := "http://"+p.client, "http://"+p.peer
	p.cmd = exec.Command("etcd", "--name", "t", "--data-dir", filepath.Join(p.dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	p.waitHealthy(tb)
}

func (p *etcdProc) waitHealthy(tb testing.TB) {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.client}, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	var getErr error // the last one, reported on failure
	healthy := waitfor.Poll(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, getErr = cli.Get(ctx, "health")
		return getErr == nil
	})
	if !healthy {
		log, _ := os.ReadFile(filepath.Join(p.dir, "etcd.log"))
		tb.Fatalf("etcd not healthy: %v\n%s", getErr, log)
	}
}

// kill stops etcd with SIGKILL, as a crash would.
func (p *etcdProc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

func (p *etcdProc) String() string { return fmt.Sprintf("etcd(%s)", p.client) }
