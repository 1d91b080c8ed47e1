package app

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/discovery"
)

const cometTestWait = 5 * time.Second

// acceptingLogic accepts every connection, keyed by its token.
type acceptingLogic struct {
	logic.UnimplementedLogicServer
}

func (acceptingLogic) Connect(_ context.Context, req *logic.ConnectReq) (*logic.ConnectReply, error) {
	return &logic.ConnectReply{Mid: 1, Key: string(req.GetToken())}, nil
}

func (acceptingLogic) Disconnect(context.Context, *logic.DisconnectReq) (*logic.DisconnectReply, error) {
	return &logic.DisconnectReply{}, nil
}

func startAcceptingLogic(tb testing.TB) logic.LogicClient {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer()
	logic.RegisterLogicServer(gs, acceptingLogic{})
	go func() { _ = gs.Serve(l) }()
	tb.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return logic.NewLogicClient(cc)
}

// authFrom connects to addr from the local address ip and authenticates key.
func authFrom(tb testing.TB, ip, addr, key string) net.Conn {
	tb.Helper()
	d := net.Dialer{Timeout: cometTestWait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	if _, err := nc.Write(protocol.AppendFrame(nil, protocol.Version, protocol.OpAuth, 1, []byte(key))); err != nil {
		tb.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(cometTestWait))
	var hdr [protocol.HeaderLen]byte
	f, err := protocol.ReadFrame(nc, &hdr, 1<<16, nil)
	if err != nil || f.Op != protocol.OpAuthReply {
		tb.Fatalf("auth reply: op %d, %v", f.Op, err)
	}
	return nc
}

// TestCometPublishesCounts: the registration republishes the live
// connection count and the distinct client IP count.
func TestCometPublishesCounts(t *testing.T) {
	reg := discovery.NewStatic()
	t.Cleanup(func() { _ = reg.Close() })
	cs, err := NewComet(CometConfig{
		Config: comet.Config{
			ID: "comet-app-test", TCPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
			DrainTimeout: cometTestWait, DrainSpread: -1,
		},
		AdvertiseHost:    "127.0.0.1",
		RegisterInterval: 10 * time.Millisecond,
	}, CometDeps{Logic: startAcceptingLogic(t), Registrar: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ch, err := reg.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	waitPublished := func(conns, ips int64) {
		t.Helper()
		deadline := time.After(cometTestWait)
		for {
			select {
			case l := <-ch:
				if len(l) == 1 && l[0].Conns == conns && l[0].IPs == ips {
					return
				}
			case <-deadline:
				t.Fatalf("no registration with conns=%d ips=%d", conns, ips)
			}
		}
	}
	addr := cs.Server().Addrs().TCP
	authFrom(t, "127.0.0.1", addr, "a")
	authFrom(t, "127.0.0.1", addr, "b")
	c := authFrom(t, "127.0.0.2", addr, "c")
	waitPublished(3, 2)
	_ = c.Close()
	waitPublished(2, 1)
}
