package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// apiRecorder is a fake logic HTTP API that records the requests it got.
type apiRecorder struct {
	mu   sync.Mutex
	reqs []recorded
	code int
	body string
}

type recorded struct {
	method, path, query, auth, mid, body string
}

func (a *apiRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.reqs = append(a.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("X-Hubuim-Mid"), string(b)})
	code, body := a.code, a.body
	a.mu.Unlock()
	if code == 0 {
		code = http.StatusOK
	}
	if body == "" {
		body = `{"code":0,"message":"","data":{"ok":true}}`
	}
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out)
	return out.String(), err
}

func TestAPICommands(t *testing.T) {
	rec := &apiRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	cases := []struct {
		args                           []string
		method, path, query, auth, mid string
		body                           string
	}{
		{[]string{"push", "keys", "-logic", srv.URL, "-secret", "s", "-op", "1001", "-keys", "k1,k2", "hello", "world"},
			"POST", "/goim/push/keys", "keys=k1%2Ck2&operation=1001", "Bearer s", "", "hello world"},
		{[]string{"push", "mids", "-logic", srv.URL, "-mids", "1,2", "x"},
			"POST", "/goim/push/mids", "mids=1%2C2&operation=1000", "", "", "x"},
		{[]string{"push", "room", "-logic", srv.URL, "-room", "live://7", "r"},
			"POST", "/goim/push/room", "operation=1000&room=7&type=live", "", "", "r"},
		{[]string{"push", "all", "-logic", srv.URL, "-speed", "50", "a"},
			"POST", "/goim/push/all", "operation=1000&speed=50", "", "", "a"},
		{[]string{"online", "top", "-logic", srv.URL, "-limit", "3"},
			"GET", "/goim/online/top", "limit=3&type=live", "", "", ""},
		{[]string{"nodes", "-logic", srv.URL, "-region", "eu"},
			"GET", "/goim/nodes/weighted", "region=eu", "", "", ""},
		{[]string{"group", "create", "-logic", srv.URL, "-mid", "4", "-name", "team", "-users", "5,6"},
			"POST", "/im/v1/groups", "", "", "4", `{"members":[5,6],"name":"team"}`},
		{[]string{"group", "members", "-logic", srv.URL, "-mid", "4", "-group", "9"},
			"GET", "/im/v1/groups/9/members", "", "", "4", ""},
		{[]string{"sync", "-logic", srv.URL, "-mid", "2", "-token", "tok", "-conv", "s:1:2"},
			"POST", "/im/v1/sync", "", "Bearer tok", "2", ""},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args[:2], " "), func(t *testing.T) {
			rec.mu.Lock()
			rec.reqs = nil
			if tc.path == "/im/v1/sync" {
				rec.body = `{"code":0,"message":"","data":{"convs":[{"convId":"s:1:2","maxSeq":"1","msgs":[{"seq":"1","sender":"1","payload":"aGk="}]}]}}`
			} else {
				rec.body = ""
			}
			rec.mu.Unlock()
			out, err := runCmd(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.reqs) != 1 {
				t.Fatalf("%d requests", len(rec.reqs))
			}
			r := rec.reqs[0]
			if r.method != tc.method || r.path != tc.path || r.query != tc.query || r.auth != tc.auth || r.mid != tc.mid {
				t.Fatalf("request %+v, want %s %s?%s auth=%q mid=%q", r, tc.method, tc.path, tc.query, tc.auth, tc.mid)
			}
			if tc.body != "" && r.body != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if tc.path == "/im/v1/sync" {
				if !strings.Contains(out, "seq=1 from=1") || !strings.Contains(out, ": hi") {
					t.Fatalf("sync output %q", out)
				}
			} else if !strings.Contains(out, `"ok": true`) {
				t.Fatalf("output %q", out)
			}
		})
	}
}

func TestAPIErrorsAndUsage(t *testing.T) {
	rec := &apiRecorder{code: http.StatusBadRequest, body: `{"code":-400,"message":"keys is empty"}`}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	if _, err := runCmd(t, "push", "keys", "-logic", srv.URL, "x"); err == nil || !strings.Contains(err.Error(), "keys is empty") {
		t.Fatalf("server refusal not reported: %v", err)
	}
	for _, args := range [][]string{
		{"nosuch"}, {"push"}, {"push", "nowhere"}, {"online", "sideways"}, {"group"}, {"group", "x"},
		{"send", "-to", "1", "-group", "2", "hi"}, {"send", "-to", "2"}, {"read"},
		{"group", "add", "-users", "a,b"},
	} {
		if _, err := runCmd(t, args...); err == nil {
			t.Errorf("imctl %v: no error", args)
		}
	}
	if out, err := runCmd(t); err != nil || !strings.Contains(out, "usage: imctl") {
		t.Fatalf("usage: %q %v", out, err)
	}
}
