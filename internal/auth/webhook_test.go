package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testWebhookSecret = "hook-secret"
	testToken         = "opaque-session-token-123"
)

// hookRecorder is a webhook that checks what it receives and answers with
// a fixed status and body.
type hookRecorder struct {
	t      *testing.T
	status int
	body   string
	mu     sync.Mutex
	got    []webhookRequest
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req webhookRequest
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		h.t.Errorf("webhook got %s with content type %q", r.Method, r.Header.Get("Content-Type"))
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testWebhookSecret {
		h.t.Errorf("Authorization = %q", got)
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		h.t.Errorf("webhook body: %v", err)
	}
	h.mu.Lock()
	h.got = append(h.got, req)
	h.mu.Unlock()
	w.WriteHeader(h.status)
	_, _ = w.Write([]byte(h.body))
}

func newWebhook(t *testing.T, url string, timeout time.Duration) Verifier {
	t.Helper()
	return mustNew(t, Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: url, Timeout: timeout, Secret: testWebhookSecret}})
}

func TestWebhookAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		mid        int64
		wantMid    int64
		wantErr    error
		wantReason string
	}{
		{"allow", 200, `{"allow":true,"mid":42}`, 42, 42, nil, ""},
		{"allow fills mid", 200, `{"allow":true,"mid":42}`, 0, 42, nil, ""},
		{"allow keeps claimed mid", 200, `{"allow":true}`, 42, 42, nil, ""},
		{"allow without any mid", 200, `{"allow":true}`, 0, 0, ErrDenied, "no user id"},
		{"allow other user", 200, `{"allow":true,"mid":43}`, 42, 0, ErrSubjectMismatch, ""},
		{"deny", 200, `{"allow":false,"reason":"banned"}`, 42, 0, ErrDenied, "banned"},
		{"deny by omission", 200, `{}`, 42, 0, ErrDenied, ""},
		{"401", 401, ``, 42, 0, ErrDenied, "Unauthorized"},
		{"403", 403, `{"allow":true}`, 42, 0, ErrDenied, "Forbidden"},
		{"500", 500, `{"allow":true}`, 42, 0, ErrUnavailable, ""},
		{"503", 503, ``, 42, 0, ErrUnavailable, ""},
		{"429", 429, ``, 42, 0, ErrUnavailable, ""},
		{"404", 404, ``, 42, 0, ErrUnavailable, ""},
		{"redirect not followed", 302, ``, 42, 0, ErrUnavailable, ""},
		{"malformed JSON", 200, `{"allow":tru`, 42, 0, ErrUnavailable, ""},
		{"negative mid", 200, `{"allow":true,"mid":-1}`, 0, 0, ErrUnavailable, ""},
		{"response too large", 200, `{"allow":true,"reason":"` + strings.Repeat("x", MaxWebhookResponseBytes) + `"}`, 42, 0, ErrUnavailable, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hook := &hookRecorder{t: t, status: tc.status, body: tc.body}
			srv := httptest.NewServer(hook)
			defer srv.Close()
			v := newWebhook(t, srv.URL+"/auth?k=v", 0)
			req := &Request{Mid: tc.mid, Key: "dev", RoomID: "live://1", Platform: "web", Token: testToken, RemoteAddr: "10.0.0.1:5555"}
			id, err := v.Verify(context.Background(), req)
			hook.mu.Lock()
			got := hook.got
			hook.mu.Unlock()
			want := webhookRequest{Mid: tc.mid, Key: "dev", RoomID: "live://1", Platform: "web", Token: testToken, RemoteAddr: "10.0.0.1:5555"}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("webhook received %+v, want one %+v", got, want)
			}
			if tc.wantErr == nil {
				if err != nil || id.Mid != tc.wantMid {
					t.Fatalf("identity %+v, err %v; want mid %d", id, err, tc.wantMid)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), testToken) || strings.Contains(err.Error(), srv.URL) {
				t.Fatalf("error leaks the token or URL: %v", err)
			}
			var denied *DeniedError
			if errors.As(err, &denied) != errors.Is(tc.wantErr, ErrDenied) {
				t.Fatalf("err %v: DeniedError presence mismatch", err)
			}
			if denied != nil && denied.Reason != tc.wantReason {
				t.Fatalf("reason = %q, want %q", denied.Reason, tc.wantReason)
			}
		})
	}
}

func TestWebhookExpiresAt(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"allow": true, "mid": 5, "expires_at": exp.Unix()})
	}))
	defer srv.Close()
	v := mustNew(t, Config{Mode: ModeWebhook, Webhook: WebhookConfig{URL: srv.URL}})
	id, err := v.Verify(context.Background(), &Request{})
	if err != nil || id.Mid != 5 || !id.ExpiresAt.Equal(exp) {
		t.Fatalf("identity %+v, err %v", id, err)
	}
}

func TestWebhookDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	v := newWebhook(t, "http://"+addr+"/auth", 0)
	_, err = v.Verify(context.Background(), &Request{Mid: 1, Token: testToken})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), testToken) {
		t.Fatalf("error leaks the token: %v", err)
	}
}

func TestWebhookTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	v := newWebhook(t, srv.URL, timeout)
	start := time.Now()
	_, err := v.Verify(context.Background(), &Request{Mid: 1})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	// Generous bound: only proves the configured timeout, not the default 2s
	// or the server, ended the call.
	if elapsed := time.Since(start); elapsed >= DefaultWebhookTimeout {
		t.Fatalf("Verify returned after %v, configured timeout %v", elapsed, timeout)
	}
}

func TestWebhookCallerCancel(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(started)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	v := newWebhook(t, srv.URL, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := v.Verify(ctx, &Request{Mid: 1})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnavailable and Canceled", err)
	}
}

func TestInsecure(t *testing.T) {
	v := mustNew(t, Config{Mode: ModeInsecure})
	if id, err := v.Verify(context.Background(), &Request{Mid: 9}); err != nil || id.Mid != 9 || !id.ExpiresAt.IsZero() {
		t.Fatalf("identity %+v, err %v", id, err)
	}
	for _, req := range []*Request{{Mid: 0}, {Mid: -1}, {Mid: 1, Key: strings.Repeat("k", MaxKeyLen+1)}, nil} {
		if _, err := v.Verify(context.Background(), req); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("Verify(%+v): err = %v, want ErrBadRequest", req, err)
		}
	}
}
