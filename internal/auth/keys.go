package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
)

// Algorithms the jwt mode can accept. Anything else, "none" included, is
// rejected before a key is looked up.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// p256CoordLen is the byte length of a P-256 coordinate in a JWK.
const p256CoordLen = 32

// maxRSAExponent keeps e within an int on every platform.
const maxRSAExponent = 1<<31 - 1

// namedKey is a public key and its key id ("" when it has none).
type namedKey struct {
	kid string
	key any // *rsa.PublicKey or *ecdsa.PublicKey (P-256)
}

// keySet holds public keys by family. It is immutable once built.
type keySet struct {
	rsa []namedKey
	ec  []namedKey
}

func (s *keySet) add(k namedKey) {
	switch k.key.(type) {
	case *rsa.PublicKey:
		s.rsa = append(s.rsa, k)
	case *ecdsa.PublicKey:
		s.ec = append(s.ec, k)
	}
}

func (s *keySet) len() int {
	if s == nil {
		return 0
	}
	return len(s.rsa) + len(s.ec)
}

// appendMatching appends the keys usable for alg whose kid matches (every
// key of the family when kid is empty).
func (s *keySet) appendMatching(dst []any, alg, kid string) []any {
	if s == nil {
		return dst
	}
	var family []namedKey
	switch alg {
	case algRS256:
		family = s.rsa
	case algES256:
		family = s.ec
	}
	for _, k := range family {
		if kid == "" || k.kid == kid {
			dst = append(dst, k.key)
		}
	}
	return dst
}

// checkPublicKey accepts RSA keys of at least MinRSABits and EC P-256 keys.
func checkPublicKey(key any) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key has %d bits, need at least %d", k.N.BitLen(), MinRSABits)
		}
		return nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("EC key on curve %s, only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return nil
	default:
		return fmt.Errorf("unsupported key type %T: want RSA or EC P-256", key)
	}
}

// parsePEMPublicKey reads the single public key in a PEM file.
func parsePEMPublicKey(path string, data []byte) (namedKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return namedKey{}, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return namedKey{}, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return namedKey{}, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	if err := checkPublicKey(key); err != nil {
		return namedKey{}, err
	}
	base := filepath.Base(path)
	return namedKey{kid: strings.TrimSuffix(base, filepath.Ext(base)), key: key}, nil
}

// jwk is one entry of a JSON Web Key Set (RFC 7517/7518), public parts only.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	// RSA
	N string `json:"n"`
	E string `json:"e"`
	// EC
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS returns the usable signature keys of a key set and a
// description of each key it skipped. It fails when no key is usable.
func parseJWKS(data []byte) (*keySet, []string, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JSON Web Key Set: %s", describeJSONError(err))
	}
	set := new(keySet)
	var skipped []string
	for i, k := range doc.Keys {
		key, err := k.publicKey()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, k.Kid, err))
			continue
		}
		set.add(namedKey{kid: k.Kid, key: key})
	}
	if set.len() == 0 {
		return nil, skipped, fmt.Errorf("no usable RSA or EC P-256 signature key among %d keys", len(doc.Keys))
	}
	return set, skipped, nil
}

func (k *jwk) publicKey() (any, error) {
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("use %q is not \"sig\"", k.Use)
	}
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != algRS256 {
			return nil, fmt.Errorf("alg %q not supported for RSA (want %s)", k.Alg, algRS256)
		}
		return k.rsaKey()
	case "EC":
		if k.Alg != "" && k.Alg != algES256 {
			return nil, fmt.Errorf("alg %q not supported for EC (want %s)", k.Alg, algES256)
		}
		return k.ecKey()
	default:
		return nil, fmt.Errorf("kty %q not supported", k.Kty)
	}
}

func (k *jwk) rsaKey() (*rsa.PublicKey, error) {
	n, err := decodeB64URL(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("bad modulus n")
	}
	e, err := decodeB64URL(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("bad exponent e")
	}
	exp := new(big.Int).SetBytes(e)
	if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64() > maxRSAExponent || exp.Bit(0) == 0 {
		return nil, errors.New("bad exponent e")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

func (k *jwk) ecKey() (*ecdsa.PublicKey, error) {
	if k.Crv != "P-256" {
		return nil, fmt.Errorf("curve %q not supported (want P-256)", k.Crv)
	}
	x, errX := decodeB64URL(k.X)
	y, errY := decodeB64URL(k.Y)
	if errX != nil || errY != nil || len(x) != p256CoordLen || len(y) != p256CoordLen {
		return nil, errors.New("bad coordinates x/y")
	}
	point := make([]byte, 0, 1+2*p256CoordLen)
	point = append(point, 4) // SEC 1 uncompressed point
	point = append(point, x...)
	point = append(point, y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("point is not on P-256")
	}
	return pub, nil
}

// decodeB64URL decodes base64url with or without padding.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
