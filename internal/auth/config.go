package auth

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
)

// Modes accepted in Config.Mode.
const (
	ModeJWT      = "jwt"
	ModeWebhook  = "webhook"
	ModeInsecure = "insecure"
)

// Defaults filled in by New.
const (
	DefaultLeeway             = 30 * time.Second
	DefaultSubjectClaim       = "sub"
	DefaultJWKSReloadInterval = 30 * time.Second
	DefaultWebhookTimeout     = 2 * time.Second
	DefaultWebhookMaxIdle     = 64
)

// Limits on key material.
const (
	// MinHMACSecretLen is the shortest HS256 secret accepted (RFC 7518 §3.2:
	// at least the hash size).
	MinHMACSecretLen = 32
	// MinRSABits is the smallest RSA modulus accepted.
	MinRSABits = 2048
	// maxKeyFileBytes bounds a secret, PEM or JWKS file read at start.
	maxKeyFileBytes = 1 << 20
)

// fieldPrefix is the YAML path of Config inside a service's configuration;
// errors name fields with it.
const fieldPrefix = "auth."

// Config chooses the verifier. The zero value is NOT valid: Mode must be set.
type Config struct {
	// Mode is "jwt", "webhook" or "insecure". Required.
	Mode    string        `yaml:"mode"`
	JWT     JWTConfig     `yaml:"jwt"`
	Webhook WebhookConfig `yaml:"webhook"`
	// Registerer receives hubuim_auth_* metrics; nil registers nothing.
	Registerer prometheus.Registerer `yaml:"-"`
}

// JWTConfig configures mode "jwt". At least one key source is required:
// a secret (HS256), public key files or a JWKS file (RS256/ES256). Several
// may be combined; each key only verifies its own algorithm.
type JWTConfig struct {
	// Secret is the HS256 shared secret, at least MinHMACSecretLen bytes.
	// Mutually exclusive with SecretFile.
	Secret string `yaml:"secret"`
	// SecretFile holds the HS256 secret; surrounding whitespace is trimmed.
	SecretFile string `yaml:"secret_file"`
	// PublicKeyFiles are PEM files, one public key each ("PUBLIC KEY",
	// "RSA PUBLIC KEY" or "CERTIFICATE"): RSA of at least MinRSABits, or EC
	// P-256. A key's kid is its file name without the extension; tokens
	// without a kid are tried against every key of their algorithm.
	PublicKeyFiles []string `yaml:"public_key_files"`
	// JWKSFile is a JSON Web Key Set (RFC 7517) with RSA and EC P-256 keys
	// selected by kid. Keys of other types or with use other than "sig" are
	// skipped.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSReloadInterval is how often the JWKS file is re-read (on the
	// verification path, no goroutine); a token with an unknown kid forces
	// a re-read at most once a second. Default 30s; negative disables.
	JWKSReloadInterval time.Duration `yaml:"jwks_reload_interval"`
	// Audience, if set, must appear in the token's aud claim.
	Audience string `yaml:"audience"`
	// Issuer, if set, must equal the token's iss claim.
	Issuer string `yaml:"issuer"`
	// Leeway tolerates clock skew on exp and nbf. Default 30s; negative
	// means none.
	Leeway time.Duration `yaml:"leeway"`
	// SubjectClaim names the claim holding the user id (string or number).
	// Default "sub".
	SubjectClaim string `yaml:"subject_claim"`
	// RequireExpiry rejects tokens without an exp claim. Default false.
	RequireExpiry bool `yaml:"require_expiry"`
}

// WebhookConfig configures mode "webhook".
type WebhookConfig struct {
	// URL receives the POST; http or https. Required.
	URL string `yaml:"url"`
	// Timeout bounds one call, connection included. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Secret, if set, is sent as "Authorization: Bearer <secret>".
	// Mutually exclusive with SecretFile.
	Secret string `yaml:"secret"`
	// SecretFile holds Secret; surrounding whitespace is trimmed.
	SecretFile string `yaml:"secret_file"`
	// MaxIdleConns is the number of idle keep-alive connections kept to the
	// webhook host. Default 64.
	MaxIdleConns int `yaml:"max_idle_conns"`
}

// New validates cfg and returns the verifier for its mode. Errors about the
// configuration are *config.FieldError naming the field. logger may be nil
// (slog.Default()).
func New(cfg Config, logger *slog.Logger) (Verifier, error) {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "auth", "mode", cfg.Mode)
	var (
		v   Verifier
		err error
	)
	switch cfg.Mode {
	case ModeJWT:
		v, err = newJWTVerifier(cfg.JWT, logger)
	case ModeWebhook:
		v, err = newWebhookVerifier(cfg.Webhook)
	case ModeInsecure:
		logger.Warn("insecure authentication: the mid in the Auth body is trusted without any credential; for development only, never in production")
		v = insecureVerifier{}
	case "":
		return nil, config.Errorf(fieldPrefix+"mode", "required: one of %q, %q, %q", ModeJWT, ModeWebhook, ModeInsecure)
	default:
		return nil, config.Errorf(fieldPrefix+"mode", "unknown mode %q: want %q, %q or %q", cfg.Mode, ModeJWT, ModeWebhook, ModeInsecure)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Registerer == nil {
		return v, nil
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return m.wrap(cfg.Mode, v), nil
}

// loadSecret returns the secret given inline or in a file, never both.
func loadSecret(field, inline, file string) ([]byte, error) {
	switch {
	case inline != "" && file != "":
		return nil, config.Errorf(field+"_file", "set either %s or %s_file, not both", lastElem(field), lastElem(field))
	case inline != "":
		return []byte(inline), nil
	case file != "":
		data, err := readBounded(file)
		if err != nil {
			return nil, config.Errorf(field+"_file", "%v", err)
		}
		data = []byte(strings.TrimSpace(string(data)))
		if len(data) == 0 {
			return nil, config.Errorf(field+"_file", "file %s is empty", file)
		}
		return data, nil
	}
	return nil, nil
}

func lastElem(field string) string {
	return field[strings.LastIndexByte(field, '.')+1:]
}

// readBounded reads a small key or secret file, refusing large ones.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("file %s is larger than %d bytes", path, maxKeyFileBytes)
	}
	return data, nil
}

func validateWebhookURL(raw string) error {
	if raw == "" {
		return config.Errorf(fieldPrefix+"webhook.url", "required in mode %q", ModeWebhook)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return config.Errorf(fieldPrefix+"webhook.url", "not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return config.Errorf(fieldPrefix+"webhook.url", "must be an absolute http or https URL")
	}
	return nil
}
