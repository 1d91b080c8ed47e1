package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/hubuim/hubuim/internal/config"
)

// Webhook response limits.
const (
	// MaxWebhookResponseBytes bounds the webhook's answer that is read.
	MaxWebhookResponseBytes = 16 << 10
	// webhookDrainBytes is how much of an unwanted body is discarded so the
	// connection can be reused; beyond that it is closed.
	webhookDrainBytes = 4 << 10
	// webhookIdleTimeout closes idle keep-alive connections to the webhook.
	webhookIdleTimeout = 90 * time.Second
)

// webhookRequest is the JSON body POSTed to the webhook.
type webhookRequest struct {
	Mid        int64  `json:"mid"`
	Key        string `json:"key"`
	RoomID     string `json:"room_id"`
	Platform   string `json:"platform"`
	Token      string `json:"token"`
	RemoteAddr string `json:"remote_addr"`
}

// webhookResponse is the JSON the webhook answers with status 200.
type webhookResponse struct {
	Allow  bool   `json:"allow"`
	Mid    int64  `json:"mid"`
	Reason string `json:"reason"`
	// ExpiresAt (unix seconds, optional) is when the session's credential
	// ends; 0 means it does not.
	ExpiresAt int64 `json:"expires_at"`
}

// webhookVerifier implements mode "webhook".
type webhookVerifier struct {
	url     string
	timeout time.Duration
	authz   string // full Authorization header value, or ""
	client  *http.Client
}

func newWebhookVerifier(cfg WebhookConfig) (*webhookVerifier, error) {
	const f = fieldPrefix + "webhook."
	if err := validateWebhookURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, config.Errorf(f+"timeout", "must not be negative")
	}
	if cfg.MaxIdleConns < 0 {
		return nil, config.Errorf(f+"max_idle_conns", "must not be negative")
	}
	secret, err := loadSecret(f+"secret", cfg.Secret, cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	v := &webhookVerifier{url: cfg.URL, timeout: cfg.Timeout}
	if v.timeout == 0 {
		v.timeout = DefaultWebhookTimeout
	}
	if secret != nil {
		v.authz = "Bearer " + string(secret)
	}
	idle := cfg.MaxIdleConns
	if idle == 0 {
		idle = DefaultWebhookMaxIdle
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: v.timeout}).DialContext,
		MaxIdleConns:        idle,
		MaxIdleConnsPerHost: idle,
		IdleConnTimeout:     webhookIdleTimeout,
		TLSHandshakeTimeout: v.timeout,
		ForceAttemptHTTP2:   true,
	}
	v.client = &http.Client{
		Transport: transport,
		// A redirect would send the token somewhere not configured.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return v, nil
}

// Verify asks the webhook. Its mid wins when the client sent 0; when both
// are set they must agree.
func (v *webhookVerifier) Verify(ctx context.Context, req *Request) (Identity, error) {
	if err := req.validate(); err != nil {
		return Identity{}, err
	}
	body, err := json.Marshal(webhookRequest{
		Mid:        req.Mid,
		Key:        req.Key,
		RoomID:     req.RoomID,
		Platform:   req.Platform,
		Token:      req.Token,
		RemoteAddr: req.RemoteAddr,
	})
	if err != nil {
		return Identity{}, fmt.Errorf("%w: encode webhook request: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url, bytes.NewReader(body))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: build webhook request: %v", ErrUnavailable, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	if v.authz != "" {
		hreq.Header.Set("Authorization", v.authz)
	}
	resp, err := v.client.Do(hreq)
	if err != nil {
		return Identity{}, v.transportError(ctx, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookDrainBytes))
		resp.Body.Close()
	}()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return Identity{}, &DeniedError{Reason: http.StatusText(resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return Identity{}, fmt.Errorf("%w: webhook answered status %d", ErrUnavailable, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxWebhookResponseBytes+1))
	if err != nil {
		return Identity{}, v.transportError(ctx, err)
	}
	if len(data) > MaxWebhookResponseBytes {
		return Identity{}, fmt.Errorf("%w: webhook response larger than %d bytes", ErrUnavailable, MaxWebhookResponseBytes)
	}
	var ans webhookResponse
	if err := json.Unmarshal(data, &ans); err != nil {
		return Identity{}, fmt.Errorf("%w: webhook response: %s", ErrUnavailable, describeJSONError(err))
	}
	if !ans.Allow {
		return Identity{}, &DeniedError{Reason: ans.Reason}
	}
	if ans.Mid < 0 || ans.ExpiresAt < 0 {
		return Identity{}, fmt.Errorf("%w: webhook response has a negative mid or expires_at", ErrUnavailable)
	}
	mid := req.Mid
	switch {
	case ans.Mid == 0:
	case mid == 0:
		mid = ans.Mid
	case mid != ans.Mid:
		return Identity{}, ErrSubjectMismatch
	}
	if mid == 0 {
		return Identity{}, &DeniedError{Reason: "no user id"}
	}
	id := Identity{Mid: mid}
	if ans.ExpiresAt > 0 {
		id.ExpiresAt = time.Unix(ans.ExpiresAt, 0)
	}
	return id, nil
}

// transportError wraps a failed call as ErrUnavailable without the URL,
// which may carry credentials in its query.
func (v *webhookVerifier) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: webhook timed out: %w", ErrUnavailable, ctx.Err())
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("%w: webhook: %v", ErrUnavailable, err)
}
