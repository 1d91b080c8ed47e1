package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testRSABits = 2048

// testKeys are generated once per test binary: RSA generation is slow.
type testKeys struct {
	rsaA, rsaB *rsa.PrivateKey
	ecA, ecB   *ecdsa.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
	keysErr  error
)

func getKeys(tb testing.TB) testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		if keys.rsaA, keysErr = rsa.GenerateKey(rand.Reader, testRSABits); keysErr != nil {
			return
		}
		if keys.rsaB, keysErr = rsa.GenerateKey(rand.Reader, testRSABits); keysErr != nil {
			return
		}
		if keys.ecA, keysErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); keysErr != nil {
			return
		}
		keys.ecB, keysErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if keysErr != nil {
		tb.Fatalf("generate keys: %v", keysErr)
	}
	return keys
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeFile(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func pemPublic(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// jwkOf renders a public key as a JWK with kid.
func jwkOf(tb testing.TB, kid string, pub any) map[string]string {
	tb.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		if err != nil {
			tb.Fatal(err)
		}
		return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
			"x": b64(raw[1 : 1+p256CoordLen]), "y": b64(raw[1+p256CoordLen:])}
	}
	tb.Fatalf("unsupported key %T", pub)
	return nil
}

func jwksJSON(tb testing.TB, entries ...map[string]string) []byte {
	tb.Helper()
	data, err := json.Marshal(map[string]any{"keys": entries})
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// sign mints a token with method and key; kid is set in the header when
// not empty.
func sign(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return s
}

// claimsFor returns sub/aud/exp claims for mid valid for an hour.
func claimsFor(mid int64, aud string) jwt.MapClaims {
	c := jwt.MapClaims{"sub": jsonInt(mid), "exp": time.Now().Add(time.Hour).Unix()}
	if aud != "" {
		c["aud"] = aud
	}
	return c
}

func jsonInt(v int64) string { return strconv.FormatInt(v, 10) }

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}

func mustNew(tb testing.TB, cfg Config) Verifier {
	tb.Helper()
	v, err := New(cfg, discardLogger())
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}
