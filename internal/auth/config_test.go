package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
)

func TestNewValidation(t *testing.T) {
	k := getKeys(t)
	dir := t.TempDir()
	good := writeFile(t, dir, "good.pem", pemPublic(t, &k.rsaA.PublicKey))
	twin := writeFile(t, t.TempDir(), "good.pem", pemPublic(t, &k.rsaB.PublicKey))
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weakRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384Path := writeFile(t, dir, "p384.pem", pemPublic(t, &p384.PublicKey))
	weakPath := writeFile(t, dir, "weak.pem", pemPublic(t, &weakRSA.PublicKey))
	notPEM := writeFile(t, dir, "junk.pem", []byte("hello"))
	emptySecret := writeFile(t, dir, "empty", []byte(" \n"))
	bigFile := writeFile(t, dir, "big", bytes.Repeat([]byte("a"), maxKeyFileBytes+1))
	noKeysJWKS := writeFile(t, dir, "nokeys.json", []byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`))
	sec := string(testSecret)

	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"zero value", Config{}, "auth.mode"},
		{"unknown mode", Config{Mode: "ldap"}, "auth.mode"},
		{"jwt without keys", Config{Mode: ModeJWT}, "auth.jwt.secret"},
		{"short secret", Config{Mode: ModeJWT, JWT: JWTConfig{Secret: "short"}}, "auth.jwt.secret"},
		{"secret and secret_file", Config{Mode: ModeJWT, JWT: JWTConfig{Secret: sec, SecretFile: good}}, "auth.jwt.secret_file"},
		{"missing secret_file", Config{Mode: ModeJWT, JWT: JWTConfig{SecretFile: dir + "/nope"}}, "auth.jwt.secret_file"},
		{"empty secret_file", Config{Mode: ModeJWT, JWT: JWTConfig{SecretFile: emptySecret}}, "auth.jwt.secret_file"},
		{"huge secret_file", Config{Mode: ModeJWT, JWT: JWTConfig{SecretFile: bigFile}}, "auth.jwt.secret_file"},
		{"missing PEM", Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{good, dir + "/nope.pem"}}}, "auth.jwt.public_key_files[1]"},
		{"not PEM", Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{notPEM}}}, "auth.jwt.public_key_files[0]"},
		{"P-384 key", Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{p384Path}}}, "auth.jwt.public_key_files[0]"},
		{"1024-bit RSA", Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{weakPath}}}, "auth.jwt.public_key_files[0]"},
		{"duplicate kid", Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{good, twin}}}, "auth.jwt.public_key_files[1]"},
		{"JWKS missing", Config{Mode: ModeJWT, JWT: JWTConfig{JWKSFile: dir + "/nope.json"}}, "auth.jwt.jwks_file"},
		{"JWKS without usable keys", Config{Mode: ModeJWT, JWT: JWTConfig{JWKSFile: noKeysJWKS}}, "auth.jwt.jwks_file"},
		{"webhook without URL", Config{Mode: ModeWebhook}, "auth.webhook.url"},
		{"webhook relative URL", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "/auth"}}, "auth.webhook.url"},
		{"webhook ftp URL", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "ftp://x/auth"}}, "auth.webhook.url"},
		{"webhook bad URL", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "http://[::1"}}, "auth.webhook.url"},
		{"webhook negative timeout", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "http://x", Timeout: -1}}, "auth.webhook.timeout"},
		{"webhook negative idle", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "http://x", MaxIdleConns: -1}}, "auth.webhook.max_idle_conns"},
		{"webhook two secrets", Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: "http://x", Secret: "a", SecretFile: good}}, "auth.webhook.secret_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg, discardLogger())
			var fe *config.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("New: verifier %v, err %v; want a *config.FieldError", v, err)
			}
			if fe.Field != tc.field {
				t.Fatalf("field = %q, want %q (%v)", fe.Field, tc.field, err)
			}
			if tc.cfg.JWT.Secret != "" && strings.Contains(err.Error(), tc.cfg.JWT.Secret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestInsecureWarnsOnce(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	v, err := New(Config{Mode: ModeInsecure}, logger)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := v.Verify(context.Background(), &Request{Mid: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 || !strings.Contains(buf.String(), "development only") {
		t.Fatalf("want exactly one development-only warning, log:\n%s", buf.String())
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cfg := Config{Mode: ModeJWT, JWT: JWTConfig{Secret: string(testSecret)}, Registerer: reg}
	v := mustNew(t, cfg)
	v2 := mustNew(t, cfg) // a second verifier on the same registry shares the collectors
	tok, err := SignHS256(testSecret, 3, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, call := range []struct {
		v   Verifier
		req *Request
	}{
		{v, &Request{Mid: 3, Token: tok}},
		{v2, &Request{Mid: 3, Token: tok}},
		{v, &Request{Mid: 4, Token: tok}},
		{v, &Request{Mid: 3, Token: "x"}},
		{v, &Request{Mid: -1}},
	} {
		_, _ = call.v.Verify(ctx, call.req)
	}
	counters, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(counters) != 2 {
		t.Fatalf("gathered %d metric families, want 2", len(counters))
	}
	results := map[string]float64{}
	var observed uint64
	for _, mf := range counters {
		if mf.GetName() == "hubuim_auth_verify_duration_seconds" {
			for _, m := range mf.GetMetric() {
				observed += m.GetHistogram().GetSampleCount()
			}
			continue
		}
		for _, m := range mf.GetMetric() {
			var mode, result string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "mode":
					mode = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			if mode != ModeJWT {
				t.Fatalf("mode label %q", mode)
			}
			results[result] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"ok": 2, "subject_mismatch": 1, "invalid_token": 1, "bad_request": 1}
	for r, n := range want {
		if results[r] != n {
			t.Fatalf("result %q = %v, want %v (all: %v)", r, results[r], n, results)
		}
	}
	if observed != 5 {
		t.Fatalf("duration samples = %d, want 5", observed)
	}
}
