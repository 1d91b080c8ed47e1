package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testAudience = "hubuim"
	testMid      = int64(1001)
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// jwtFixture builds one verifier per key source.
type jwtFixture struct {
	keys                      testKeys
	hs, rs, es, jwks, rsNoAud Verifier
	rsPEM                     []byte
}

func newJWTFixture(t *testing.T) *jwtFixture {
	t.Helper()
	k := getKeys(t)
	dir := t.TempDir()
	fx := &jwtFixture{keys: k, rsPEM: pemPublic(t, &k.rsaA.PublicKey)}
	rsPath := writeFile(t, dir, "rsa-a.pem", fx.rsPEM)
	esPath := writeFile(t, dir, "ec-a.pem", pemPublic(t, &k.ecA.PublicKey))
	jwksPath := writeFile(t, dir, "keys.json", jwksJSON(t,
		jwkOf(t, "r1", &k.rsaA.PublicKey),
		jwkOf(t, "e1", &k.ecA.PublicKey),
		map[string]string{"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}, // skipped
	))
	fx.hs = mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{Secret: string(testSecret), Audience: testAudience}})
	fx.rs = mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{rsPath}, Audience: testAudience}})
	fx.es = mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{esPath}, Audience: testAudience}})
	fx.jwks = mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{JWKSFile: jwksPath, Audience: testAudience}})
	fx.rsNoAud = mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{PublicKeyFiles: []string{rsPath}}})
	return fx
}

func TestJWTVerify(t *testing.T) {
	fx := newJWTFixture(t)
	k := fx.keys
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", c) }
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, k.rsaA, "", c) }
	good := claimsFor(testMid, testAudience)
	now := time.Now()

	tests := []struct {
		name    string
		v       Verifier
		mid     int64 // claimed in the request
		token   string
		wantMid int64
		wantErr error
	}{
		{"HS256 valid", fx.hs, testMid, hs(good), testMid, nil},
		{"HS256 numeric sub", fx.hs, testMid, hs(with(good, "sub", testMid)), testMid, nil},
		{"HS256 large sub stays exact", fx.hs, 1<<62 + 1, hs(with(good, "sub", int64(1<<62+1))), 1<<62 + 1, nil},
		{"HS256 aud list", fx.hs, testMid, hs(with(good, "aud", []string{"other", testAudience})), testMid, nil},
		{"RS256 valid (PEM)", fx.rs, testMid, rs(good), testMid, nil},
		{"ES256 valid (PEM)", fx.es, testMid, sign(t, jwt.SigningMethodES256, k.ecA, "", good), testMid, nil},
		{"PEM kid from file name", fx.rs, testMid, sign(t, jwt.SigningMethodRS256, k.rsaA, "rsa-a", good), testMid, nil},
		{"PEM unknown kid", fx.rs, testMid, sign(t, jwt.SigningMethodRS256, k.rsaA, "nope", good), 0, ErrInvalidToken},
		{"JWKS RS256 by kid", fx.jwks, testMid, sign(t, jwt.SigningMethodRS256, k.rsaA, "r1", good), testMid, nil},
		{"JWKS ES256 by kid", fx.jwks, testMid, sign(t, jwt.SigningMethodES256, k.ecA, "e1", good), testMid, nil},
		{"JWKS without kid tries all keys", fx.jwks, testMid, sign(t, jwt.SigningMethodES256, k.ecA, "", good), testMid, nil},
		{"JWKS unknown kid", fx.jwks, testMid, sign(t, jwt.SigningMethodRS256, k.rsaA, "r9", good), 0, ErrInvalidToken},
		{"JWKS kid of another family", fx.jwks, testMid, sign(t, jwt.SigningMethodES256, k.ecA, "r1", good), 0, ErrInvalidToken},
		{"JWKS HS256 not allowed", fx.jwks, testMid, hs(good), 0, ErrInvalidToken},

		{"mid 0 filled from subject", fx.hs, 0, hs(good), testMid, nil},
		{"subject mismatch", fx.hs, testMid + 1, hs(good), 0, ErrSubjectMismatch},
		{"subject missing", fx.hs, testMid, hs(with(good, "sub", nil)), 0, ErrInvalidToken},
		{"subject not a number", fx.hs, testMid, hs(with(good, "sub", "alice")), 0, ErrInvalidToken},
		{"subject negative", fx.hs, 0, hs(with(good, "sub", "-5")), 0, ErrInvalidToken},
		{"subject fractional", fx.hs, 0, hs(with(good, "sub", 1.5)), 0, ErrInvalidToken},

		{"expired", fx.hs, testMid, hs(with(good, "exp", now.Add(-time.Hour).Unix())), 0, ErrExpired},
		{"expired within leeway", fx.hs, testMid, hs(with(good, "exp", now.Add(-5*time.Second).Unix())), testMid, nil},
		{"not before in the future", fx.hs, testMid, hs(with(good, "nbf", now.Add(time.Hour).Unix())), 0, ErrExpired},
		{"no exp accepted by default", fx.hs, testMid, hs(with(good, "exp", nil)), testMid, nil},
		{"exp of the wrong type", fx.hs, testMid, hs(with(good, "exp", "tomorrow")), 0, ErrInvalidToken},

		{"wrong audience", fx.hs, testMid, hs(with(good, "aud", "someone-else")), 0, ErrAudience},
		{"missing audience", fx.hs, testMid, hs(with(good, "aud", nil)), 0, ErrAudience},
		{"audience not checked when unset", fx.rsNoAud, testMid, rs(with(good, "aud", "x")), testMid, nil},

		{"HS256 wrong secret", fx.hs, testMid, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), "", good), 0, ErrInvalidToken},
		{"RS256 signed by another key", fx.rs, testMid, sign(t, jwt.SigningMethodRS256, k.rsaB, "", good), 0, ErrInvalidToken},
		{"ES256 signed by another key", fx.es, testMid, sign(t, jwt.SigningMethodES256, k.ecB, "", good), 0, ErrInvalidToken},
		{"JWKS signed by another key", fx.jwks, testMid, sign(t, jwt.SigningMethodRS256, k.rsaB, "r1", good), 0, ErrInvalidToken},
		{"alg none (library)", fx.hs, testMid, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good), 0, ErrInvalidToken},
		{"alg none (hand-made)", fx.rs, testMid, noneToken(good), 0, ErrInvalidToken},
		{"HS secret verifier, RS256 token", fx.hs, testMid, rs(good), 0, ErrInvalidToken},
		{"RS verifier, HS256 token keyed with the public PEM", fx.rs, testMid, sign(t, jwt.SigningMethodHS256, fx.rsPEM, "", good), 0, ErrInvalidToken},
		{"RS verifier, RS384 token", fx.rs, testMid, sign(t, jwt.SigningMethodRS384, k.rsaA, "", good), 0, ErrInvalidToken},
		{"missing token", fx.hs, testMid, "", 0, ErrInvalidToken},
		{"malformed token", fx.hs, testMid, "abc.def", 0, ErrInvalidToken},
		{"garbage segments", fx.hs, testMid, "!!.??.**", 0, ErrInvalidToken},
		{"tampered payload", fx.hs, testMid, tamper(hs(good)), 0, ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Verify(context.Background(), &Request{Mid: tc.mid, Token: tc.token})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if tc.token != "" && strings.Contains(err.Error(), tc.token) {
					t.Fatalf("error contains the token: %v", err)
				}
				if id != (Identity{}) {
					t.Fatalf("identity %+v returned with an error", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Mid != tc.wantMid {
				t.Fatalf("mid = %d, want %d", id.Mid, tc.wantMid)
			}
		})
	}
}

func TestJWTIdentityExpiry(t *testing.T) {
	v := mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{Secret: string(testSecret)}})
	exp := time.Now().Add(10 * time.Minute).Truncate(time.Second)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", jwt.MapClaims{"sub": "5", "exp": exp.Unix()})
	id, err := v.Verify(context.Background(), &Request{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if id.Mid != 5 || !id.ExpiresAt.Equal(exp) {
		t.Fatalf("identity = %+v, want mid 5 expiring %v", id, exp)
	}
	tok = sign(t, jwt.SigningMethodHS256, testSecret, "", jwt.MapClaims{"sub": "5"})
	if id, err = v.Verify(context.Background(), &Request{Token: tok}); err != nil || !id.ExpiresAt.IsZero() {
		t.Fatalf("no exp: identity %+v, err %v; want zero ExpiresAt", id, err)
	}
}

func TestJWTOptions(t *testing.T) {
	sec := string(testSecret)
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", c) }
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name    string
		cfg     JWTConfig
		claims  jwt.MapClaims
		wantErr error
	}{
		{"issuer matches", JWTConfig{Secret: sec, Issuer: "idp"}, jwt.MapClaims{"sub": "1", "iss": "idp"}, nil},
		{"issuer differs", JWTConfig{Secret: sec, Issuer: "idp"}, jwt.MapClaims{"sub": "1", "iss": "evil"}, ErrInvalidToken},
		{"issuer missing", JWTConfig{Secret: sec, Issuer: "idp"}, jwt.MapClaims{"sub": "1"}, ErrInvalidToken},
		{"require expiry, present", JWTConfig{Secret: sec, RequireExpiry: true}, jwt.MapClaims{"sub": "1", "exp": exp}, nil},
		{"require expiry, absent", JWTConfig{Secret: sec, RequireExpiry: true}, jwt.MapClaims{"sub": "1"}, ErrInvalidToken},
		{"custom subject claim", JWTConfig{Secret: sec, SubjectClaim: "uid"}, jwt.MapClaims{"sub": "x", "uid": 1}, nil},
		{"custom subject claim missing", JWTConfig{Secret: sec, SubjectClaim: "uid"}, jwt.MapClaims{"sub": "1"}, ErrInvalidToken},
		{"no leeway", JWTConfig{Secret: sec, Leeway: -1}, jwt.MapClaims{"sub": "1", "exp": time.Now().Add(-2 * time.Second).Unix()}, ErrExpired},
		{"long leeway", JWTConfig{Secret: sec, Leeway: time.Hour}, jwt.MapClaims{"sub": "1", "exp": time.Now().Add(-time.Minute).Unix()}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := mustNew(t, Config{Mode: ModeJWT, JWT: tc.cfg})
			id, err := v.Verify(context.Background(), &Request{Mid: 1, Token: hs(tc.claims)})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && id.Mid != 1 {
				t.Fatalf("mid = %d", id.Mid)
			}
		})
	}
}

func TestJWTSecretFileAndCombinedSources(t *testing.T) {
	k := getKeys(t)
	dir := t.TempDir()
	secretPath := writeFile(t, dir, "secret", append(append([]byte{}, testSecret...), '\n'))
	rsPath := writeFile(t, dir, "main.pem", pemPublic(t, &k.rsaA.PublicKey))
	v := mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{SecretFile: secretPath, PublicKeyFiles: []string{rsPath}}})
	c := claimsFor(7, "")
	for _, tok := range []string{
		sign(t, jwt.SigningMethodHS256, testSecret, "", c),
		sign(t, jwt.SigningMethodRS256, k.rsaA, "main", c),
	} {
		if id, err := v.Verify(context.Background(), &Request{Mid: 7, Token: tok}); err != nil || id.Mid != 7 {
			t.Fatalf("identity %+v, err %v", id, err)
		}
	}
}

func TestSignHS256(t *testing.T) {
	v := mustNew(t, Config{Mode: ModeJWT, JWT: JWTConfig{Secret: string(testSecret), Audience: testAudience, RequireExpiry: true}})
	tok, err := SignHS256(testSecret, 77, testAudience, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), &Request{Token: tok})
	if err != nil || id.Mid != 77 || id.ExpiresAt.IsZero() {
		t.Fatalf("identity %+v, err %v", id, err)
	}
	if tok, err = SignHS256(testSecret, 77, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err = v.Verify(context.Background(), &Request{Token: tok}); !errors.Is(err, ErrAudience) {
		t.Fatalf("token without aud: err = %v, want ErrAudience", err)
	}
	for _, bad := range []struct {
		secret []byte
		mid    int64
	}{{nil, 1}, {testSecret, 0}, {testSecret, -1}} {
		if _, err := SignHS256(bad.secret, bad.mid, "", time.Minute); err == nil {
			t.Fatalf("SignHS256(%q, %d) succeeded", bad.secret, bad.mid)
		}
	}
}

// noneToken hand-crafts an unsigned token with alg "none".
func noneToken(c jwt.MapClaims) string {
	enc := base64.RawURLEncoding.EncodeToString
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, c)
	s, err := tok.SigningString()
	if err != nil {
		return enc([]byte(`{"alg":"none"}`)) + ".e30."
	}
	return s + "."
}

// tamper flips the payload of a signed token to another subject.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"1","aud":"hubuim"}`))
	return strings.Join(parts, ".")
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := mustNew(b, Config{Mode: ModeJWT, JWT: JWTConfig{Secret: string(testSecret), Audience: testAudience}})
	tok, err := SignHS256(testSecret, testMid, testAudience, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{Mid: testMid, Token: tok}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
