package auth

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 5*time.Second, what, cond)
}

func replaceFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func TestJWKSReloadOnUnknownKid(t *testing.T) {
	k := getKeys(t)
	path := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, jwkOf(t, "old", &k.rsaA.PublicKey)))
	v, err := newJWTVerifier(JWTConfig{JWKSFile: path, JWKSReloadInterval: time.Hour}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	v.jwks.minRecheck = 0 // let the unknown kid force a re-read at once

	tokNew := sign(t, jwt.SigningMethodES256, k.ecA, "new", claimsFor(3, ""))
	if _, err := v.Verify(context.Background(), &Request{Token: tokNew}); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("before rotation: err = %v, want ErrInvalidToken", err)
	}
	replaceFile(t, path, jwksJSON(t, jwkOf(t, "old", &k.rsaA.PublicKey), jwkOf(t, "new", &k.ecA.PublicKey)))
	if id, err := v.Verify(context.Background(), &Request{Token: tokNew}); err != nil || id.Mid != 3 {
		t.Fatalf("after rotation: identity %+v, err %v", id, err)
	}
}

func TestJWKSReloadOnInterval(t *testing.T) {
	k := getKeys(t)
	path := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, jwkOf(t, "a", &k.rsaA.PublicKey)))
	v := mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{JWKSFile: path, JWKSReloadInterval: time.Millisecond}})
	verify := func(key any, kid string) error {
		_, err := v.Verify(context.Background(), &Request{Token: sign(t, jwt.SigningMethodRS256, key, kid, claimsFor(9, ""))})
		return err
	}
	if err := verify(k.rsaA, "a"); err != nil {
		t.Fatal(err)
	}

	// A broken file keeps the previous keys.
	jv := v.(*jwtVerifier)
	before := jv.jwks.lastCheck.Load()
	replaceFile(t, path, []byte(`{"keys": [`))
	waitFor(t, "a reload attempt of the broken file", func() bool {
		if err := verify(k.rsaA, "a"); err != nil {
			t.Fatalf("after a broken reload: %v", err)
		}
		return jv.jwks.lastCheck.Load() != before
	})

	// Key a is replaced by key b under the same kid; the old key stops working.
	replaceFile(t, path, jwksJSON(t, jwkOf(t, "a", &k.rsaB.PublicKey)))
	waitFor(t, "rotated key to verify", func() bool { return verify(k.rsaB, "a") == nil })
	if err := verify(k.rsaA, "a"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("retired key: err = %v, want ErrInvalidToken", err)
	}
}

func TestJWKSDisabledReload(t *testing.T) {
	k := getKeys(t)
	path := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, jwkOf(t, "a", &k.rsaA.PublicKey)))
	v, err := newJWTVerifier(JWTConfig{JWKSFile: path, JWKSReloadInterval: -1}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	v.jwks.minRecheck = 0
	replaceFile(t, path, jwksJSON(t, jwkOf(t, "b", &k.rsaB.PublicKey)))
	tok := sign(t, jwt.SigningMethodRS256, k.rsaB, "b", claimsFor(9, ""))
	if _, err := v.Verify(context.Background(), &Request{Token: tok}); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("reload disabled but new key accepted: err = %v", err)
	}
}

func TestParseJWKS(t *testing.T) {
	k := getKeys(t)
	good := jwkOf(t, "e", &k.ecA.PublicKey)
	mutate := func(kv ...string) map[string]string {
		m := map[string]string{}
		for key, val := range good {
			m[key] = val
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	rsaGood := jwkOf(t, "r", &k.rsaA.PublicKey)
	rsaMutate := func(kv ...string) map[string]string {
		m := map[string]string{}
		for key, val := range rsaGood {
			m[key] = val
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name   string
		key    map[string]string
		usable bool
	}{
		{"EC P-256", good, true},
		{"RSA", rsaGood, true},
		{"padded base64", mutate("x", good["x"]+"="), true},
		{"use enc", mutate("use", "enc"), false},
		{"EC alg RS256", mutate("alg", "RS256"), false},
		{"P-384", mutate("crv", "P-384"), false},
		{"short x", mutate("x", good["x"][:10]), false},
		{"point off the curve", mutate("y", good["x"]), false},
		{"bad base64", mutate("x", "!!!"), false},
		{"kty oct", map[string]string{"kty": "oct", "k": "AAAA"}, false},
		{"RSA even exponent", rsaMutate("e", "Ag"), false},
		{"RSA exponent 1", rsaMutate("e", "AQ"), false},
		{"RSA huge exponent", rsaMutate("e", "AQAAAAAB"), false},
		{"RSA small modulus", rsaMutate("n", rsaGood["n"][:100]), false},
		{"RSA alg RS512", rsaMutate("alg", "RS512"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, skipped, err := parseJWKS(jwksJSON(t, tc.key))
			if tc.usable {
				if err != nil || set.len() != 1 {
					t.Fatalf("set %v, skipped %v, err %v", set, skipped, err)
				}
				return
			}
			if err == nil || len(skipped) != 1 {
				t.Fatalf("unusable key accepted: skipped %v, err %v", skipped, err)
			}
		})
	}
	for _, doc := range []string{``, `[]`, `{"keys": 5}`, `{"keys": []}`} {
		if _, _, err := parseJWKS([]byte(doc)); err == nil {
			t.Fatalf("parseJWKS(%q) succeeded", doc)
		}
	}
}

// TestJWTConcurrent runs verifications from many goroutines while the JWKS
// file is being replaced, for the race detector.
func TestJWTConcurrent(t *testing.T) {
	k := getKeys(t)
	path := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, jwkOf(t, "a", &k.rsaA.PublicKey)))
	v, err := newJWTVerifier(JWTConfig{Secret: string(testSecret), JWKSFile: path, JWKSReloadInterval: time.Millisecond}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	v.jwks.minRecheck = 0
	toks := []string{
		sign(t, jwt.SigningMethodRS256, k.rsaA, "a", claimsFor(1, "")),
		sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor(1, "")),
		sign(t, jwt.SigningMethodES256, k.ecA, "b", claimsFor(1, "")), // valid only after rotation
	}
	const workers, rounds = 4, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				_, err := v.Verify(context.Background(), &Request{Mid: 1, Token: toks[(w+i)%2]})
				if err != nil {
					errs <- err
					return
				}
				_, _ = v.Verify(context.Background(), &Request{Mid: 1, Token: toks[2]})
			}
		}()
	}
	for i := range 20 {
		entries := []map[string]string{jwkOf(t, "a", &k.rsaA.PublicKey)}
		if i%2 == 0 {
			entries = append(entries, jwkOf(t, "b", &k.ecA.PublicKey))
		}
		replaceFile(t, path, jwksJSON(t, entries...))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("stable key failed during rotation: %v", err)
	}
}
