package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

// TestDistributedConfig loads configs/logic.yaml: every key is known, the
// defaults written there are the code's, and it is not insecure: without
// secrets neither the verifier nor the push API can be built.
func TestDistributedConfig(t *testing.T) {
	fc, err := logicconf.Load("../../configs/logic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if fc.HTTPAddr != ":3111" || fc.GRPCAddr != ":3119" || fc.Auth.Mode != "jwt" || fc.Admin.Addr != admin.LogicAddr {
		t.Fatalf("config = %+v", fc)
	}
	// The defaults written for the sections app and im fill are the code's.
	for name, ok := range map[string]bool{
		"seq_jump":               fc.SeqJump == im.DefaultSeqJump,
		"seq_ttl":                fc.SeqTTL == im.DefaultSeqTTL,
		"dedup.window":           fc.Dedup.Window == im.DefaultDedupWindow,
		"dedup.claim_ttl":        fc.Dedup.ClaimTTL == im.DefaultDedupClaimTTL,
		"im.max_payload":         fc.IM.MaxPayload == im.DefaultMaxPayload,
		"im.sync_limit":          fc.IM.SyncLimit == im.DefaultSyncLimit,
		"im.sync_max_bytes":      fc.IM.SyncMaxBytes == im.DefaultSyncMaxBytes,
		"im.settle_time":         fc.IM.SettleTime == im.DefaultSettleTime,
		"im.message_topic":       fc.IM.MessageTopic == mq.TopicMessage,
		"idgen.prefix":           fc.IDGen.Prefix == idgen.DefaultEtcdPrefix,
		"idgen.ttl":              fc.IDGen.TTL == idgen.DefaultEtcdTTL,
		"idgen.max_workers":      fc.IDGen.MaxWorkers == idgen.MaxWorkerID+1,
		"discovery.prefix":       fc.Discovery.Prefix == discovery.DefaultEtcdPrefix,
		"discovery.ttl":          fc.Discovery.TTL == discovery.DefaultEtcdTTL,
		"discovery.coalesce":     fc.Discovery.Coalesce == discovery.DefaultEtcdCoalesce,
		"discovery.retry_max":    fc.Discovery.RetryMax == discovery.DefaultEtcdRetryMax,
		"shutdown_timeout":       fc.ShutdownTimeout == app.DefaultShutdownTimeout,
		"redis.prefix":           fc.Redis.Prefix == app.DefaultRedisPrefix,
		"admin.shutdown_timeout": fc.Admin.ShutdownTimeout == admin.DefaultShutdownTimeout,
	} {
		if !ok {
			t.Errorf("configs/logic.yaml %s differs from the code's default", name)
		}
	}
	if _, err := auth.New(fc.Auth, nil); err == nil {
		t.Fatal("the shipped auth config works without a secret")
	}
	_, err = logic.New(logic.Config{Conn: fc.Conn, Push: fc.Push, Nodes: fc.Nodes},
		logic.Deps{Store: session.NewMemory(), Verifier: auth.Verifier(nil), Producer: nil})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "push.secret" {
		t.Fatalf("logic.New with the shipped config: %v, want a push.secret error", err)
	}

	t.Setenv("HUBUIM_LOGIC_PUSH_SECRET", "p")
	t.Setenv("HUBUIM_LOGIC_AUTH_JWT_SECRET", strings.Repeat("k", 32))
	t.Setenv("HUBUIM_LOGIC_REDIS_ADDRS", "a:1,b:2")
	fc, err = logicconf.Load("../../configs/logic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if fc.Push.Secret != "p" || len(fc.Redis.Addrs) != 2 {
		t.Fatalf("env overrides not applied: %+v", fc)
	}
	if _, err := auth.New(fc.Auth, nil); err != nil {
		t.Fatalf("auth with a secret: %v", err)
	}
	// The defaults written in the file are the code's defaults.
	l, err := logic.New(logic.Config{Conn: fc.Conn, Push: fc.Push, Nodes: fc.Nodes},
		logic.Deps{Store: session.NewMemory(), Verifier: fakeVerifier{}, Producer: nopProducer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := logic.New(logic.Config{Push: logic.PushConfig{Secret: "p"}},
		logic.Deps{Store: session.NewMemory(), Verifier: fakeVerifier{}, Producer: nopProducer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, want := l.Config(), d.Config()
	if got.Conn.SessionTTL != want.Conn.SessionTTL || got.Conn.Heartbeat != want.Conn.Heartbeat ||
		got.Conn.OnlineTTL != want.Conn.OnlineTTL || got.Push.MaxBody != want.Push.MaxBody ||
		got.Push.MaxOp != want.Push.MaxOp || got.Nodes.Backoff != want.Nodes.Backoff || got.Nodes.Max != want.Nodes.Max {
		t.Fatalf("configs/logic.yaml defaults %+v differ from the code's %+v", got, want)
	}
}
