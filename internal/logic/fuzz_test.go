package logic_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/hubuim/hubuim/internal/logic"
)

// FuzzHTTPAPI: any path, query and body get goim's JSON envelope and a
// status below 500 (the fakes never fail), never a panic.
func FuzzHTTPAPI(f *testing.F) {
	e := newEnv(f, logic.Config{Push: logic.PushConfig{MaxTargets: 50}}, nil, nil)
	h := e.l.HTTPHandler()
	for _, s := range []string{
		"/goim/push/keys?operation=1000&keys=a,b",
		"/goim/push/mids?operation=1000&mids=1,2,-3",
		"/goim/push/room?operation=1000&type=live&room=1",
		"/goim/push/all?operation=1000&speed=9",
		"/goim/online/top?type=live&limit=3",
		"/goim/online/room?type=live&rooms=1",
		"/goim/online/total",
		"/goim/nodes/weighted?lat=1&lon=2&region=x",
		"/goim/nodes/instances",
	} {
		f.Add(s, []byte("body"), true)
	}
	f.Fuzz(func(t *testing.T, target string, body []byte, post bool) {
		u, err := url.Parse(target)
		if err != nil || u.Path == "" || u.Path[0] != '/' {
			return
		}
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, "http://logic"+u.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("Authorization", "Bearer "+testSecret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusNotFound || (rec.Code >= 300 && rec.Code < 400) {
			return // not an API path, or the mux cleaning the path
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %s: status %d", method, target, rec.Code)
		}
		var env struct {
			Code *int `json:"code"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Code == nil {
			t.Fatalf("%s %s: body %q is not the envelope", method, target, rec.Body.Bytes())
		}
	})
}
