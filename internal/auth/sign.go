package auth

import (
	"errors"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SignHS256 mints an HS256 token whose sub is mid, for tests and tools. An
// empty audience leaves aud out; ttl <= 0 leaves exp out.
func SignHS256(secret []byte, mid int64, audience string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: SignHS256: empty secret")
	}
	if mid <= 0 {
		return "", errors.New("auth: SignHS256: mid must be positive")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:  strconv.FormatInt(mid, 10),
		IssuedAt: jwt.NewNumericDate(now),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	if ttl > 0 {
		claims.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
