package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubuim/hubuim/internal/config"
)

// errNoKey is returned by the key lookup; it never leaves the package
// unwrapped.
var errNoKey = errors.New("no key for the token's algorithm and kid")

// jwtVerifier implements mode "jwt".
type jwtVerifier struct {
	parser       *jwt.Parser
	hmac         []byte    // nil: HS256 not accepted
	static       *keySet   // from PublicKeyFiles; may be empty
	jwks         *jwksFile // nil without JWKSFile
	audience     string
	issuer       string
	subjectClaim string
	requireExp   bool
}

func newJWTVerifier(cfg JWTConfig, logger *slog.Logger) (*jwtVerifier, error) {
	const f = fieldPrefix + "jwt."
	v := &jwtVerifier{
		static:       new(keySet),
		audience:     cfg.Audience,
		issuer:       cfg.Issuer,
		subjectClaim: cfg.SubjectClaim,
		requireExp:   cfg.RequireExpiry,
	}
	secret, err := loadSecret(f+"secret", cfg.Secret, cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	if secret != nil && len(secret) < MinHMACSecretLen {
		field := f + "secret"
		if cfg.SecretFile != "" {
			field += "_file"
		}
		return nil, config.Errorf(field, "HS256 secret is %d bytes, need at least %d", len(secret), MinHMACSecretLen)
	}
	v.hmac = secret

	kids := make(map[string]string, len(cfg.PublicKeyFiles))
	for i, path := range cfg.PublicKeyFiles {
		field := fmt.Sprintf("%spublic_key_files[%d]", f, i)
		data, err := readBounded(path)
		if err != nil {
			return nil, config.Errorf(field, "%v", err)
		}
		k, err := parsePEMPublicKey(path, data)
		if err != nil {
			return nil, config.Errorf(field, "%s: %v", path, err)
		}
		if prev, dup := kids[k.kid]; dup {
			return nil, config.Errorf(field, "%s and %s give the same kid %q", prev, path, k.kid)
		}
		kids[k.kid] = path
		v.static.add(k)
	}

	if cfg.JWKSFile != "" {
		interval := cfg.JWKSReloadInterval
		if interval == 0 {
			interval = DefaultJWKSReloadInterval
		}
		v.jwks, err = newJWKSFile(cfg.JWKSFile, interval, logger)
		if err != nil {
			return nil, config.Errorf(f+"jwks_file", "%s: %v", cfg.JWKSFile, err)
		}
	}

	var methods []string
	if v.hmac != nil {
		methods = append(methods, algHS256)
	}
	if len(v.static.rsa) > 0 || v.jwks != nil {
		methods = append(methods, algRS256)
	}
	if len(v.static.ec) > 0 || v.jwks != nil {
		methods = append(methods, algES256)
	}
	if len(methods) == 0 {
		return nil, config.Errorf(f+"secret", "mode %q needs a key: set secret, secret_file, public_key_files or jwks_file", ModeJWT)
	}

	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		leeway = 0
	}
	if v.subjectClaim == "" {
		v.subjectClaim = DefaultSubjectClaim
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithJSONNumber(), // keeps int64 subjects exact
		jwt.WithLeeway(leeway),
	)
	return v, nil
}

// Verify checks the token's signature and claims and returns the user it
// names.
func (v *jwtVerifier) Verify(_ context.Context, req *Request) (Identity, error) {
	if err := req.validate(); err != nil {
		return Identity{}, err
	}
	if req.Token == "" {
		return Identity{}, fmt.Errorf("%w: missing token", ErrInvalidToken)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(req.Token, claims, v.keyFor); err != nil {
		return Identity{}, classifyJWTError(err)
	}
	if v.audience != "" {
		aud, err := claims.GetAudience()
		if err != nil {
			return Identity{}, fmt.Errorf("%w: malformed aud claim", ErrInvalidToken)
		}
		if !slices.Contains(aud, v.audience) {
			return Identity{}, ErrAudience
		}
	}
	if v.issuer != "" {
		iss, err := claims.GetIssuer()
		if err != nil || iss != v.issuer {
			return Identity{}, fmt.Errorf("%w: wrong issuer", ErrInvalidToken)
		}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return Identity{}, fmt.Errorf("%w: malformed exp claim", ErrInvalidToken)
	}
	if exp == nil && v.requireExp {
		return Identity{}, fmt.Errorf("%w: missing exp claim", ErrInvalidToken)
	}
	mid, err := subjectMid(claims[v.subjectClaim])
	if err != nil {
		return Identity{}, fmt.Errorf("%w: claim %q: %v", ErrInvalidToken, v.subjectClaim, err)
	}
	if req.Mid != 0 && req.Mid != mid {
		return Identity{}, ErrSubjectMismatch
	}
	id := Identity{Mid: mid}
	if exp != nil {
		id.ExpiresAt = exp.Time
	}
	return id, nil
}

// keyFor picks the keys for the token's algorithm. An HS256 token only ever
// gets the shared secret and an RS256/ES256 token only public keys of its
// own family, so one key type can never verify another algorithm.
func (v *jwtVerifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	switch alg {
	case algHS256:
		if v.hmac == nil {
			return nil, errNoKey
		}
		return v.hmac, nil
	case algRS256, algES256:
	default:
		return nil, errNoKey
	}
	var kid string
	if raw, ok := t.Header["kid"]; ok {
		if kid, ok = raw.(string); !ok {
			return nil, errNoKey
		}
	}
	keys := v.lookup(alg, kid)
	if len(keys) == 0 && kid != "" && v.jwks != nil && v.jwks.recheck(time.Now()) {
		keys = v.lookup(alg, kid)
	}
	switch len(keys) {
	case 0:
		return nil, errNoKey
	case 1:
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
}

func (v *jwtVerifier) lookup(alg, kid string) []any {
	keys := v.static.appendMatching(nil, alg, kid)
	if v.jwks != nil {
		keys = v.jwks.current(time.Now()).appendMatching(keys, alg, kid)
	}
	return keys
}

// classifyJWTError maps a jwt library error to a sentinel with a fixed
// reason; the library's text is dropped because it may quote the input.
func classifyJWTError(err error) error {
	switch {
	case errors.Is(err, errNoKey):
		return fmt.Errorf("%w: %v", ErrInvalidToken, errNoKey)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: malformed token", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: bad signature or algorithm not allowed", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: unknown or missing algorithm", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: token expired", ErrExpired)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w: token not valid yet", ErrExpired)
	default:
		return fmt.Errorf("%w: invalid claims", ErrInvalidToken)
	}
}

// subjectMid reads a user id claim: a decimal string or an integer number,
// positive.
func subjectMid(v any) (int64, error) {
	var (
		mid int64
		err error
	)
	switch s := v.(type) {
	case nil:
		return 0, errors.New("missing")
	case string:
		mid, err = strconv.ParseInt(s, 10, 64)
	case json.Number:
		mid, err = s.Int64()
	default:
		return 0, errors.New("not a string or number")
	}
	if err != nil {
		return 0, errors.New("not an int64")
	}
	if mid <= 0 {
		return 0, errors.New("not positive")
	}
	return mid, nil
}
