package logic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

type httpEnv struct {
	*env
	srv *httptest.Server
}

// newHTTPEnv serves the HTTP API with some sessions: dev-1, dev-2 on
// comet-1, dev-3 on comet-2; user 7 has dev-1 and dev-3, user 8 has dev-2.
func newHTTPEnv(t *testing.T, cfg logic.Config) *httpEnv {
	t.Helper()
	e := newEnv(t, cfg, nil, nil)
	ctx := context.Background()
	for _, s := range []session.Session{
		{Key: "dev-1", Mid: 7, Server: "comet-1", ConnID: "a"},
		{Key: "dev-2", Mid: 8, Server: "comet-1", ConnID: "b"},
		{Key: "dev-3", Mid: 7, Server: "comet-2", ConnID: "c"},
	} {
		if _, err := e.store.Add(ctx, s, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(e.l.HTTPHandler())
	t.Cleanup(srv.Close)
	return &httpEnv{env: e, srv: srv}
}

type reply struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (h *httpEnv) do(t *testing.T, method, path, secret string, body []byte) (int, reply) {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r reply
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s %s: body %q is not the envelope: %v", method, path, raw, err)
	}
	return resp.StatusCode, r
}

func sortedKeys(r record) []string {
	k := slices.Clone(r.msg.Keys)
	slices.Sort(k)
	return k
}

func TestHTTPPushKeysGroupsByComet(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	code, r := h.do(t, "POST", "/goim/push/keys?operation=1000&keys=dev-1,dev-3&keys=dev-2&keys=offline&keys=dev-1", testSecret, []byte("hello"))
	if code != 200 || r.Code != 0 {
		t.Fatalf("push keys: %d %+v", code, r)
	}
	recs := h.producer.take()
	if len(recs) != 2 {
		t.Fatalf("published %d records, want one per comet (2): %+v", len(recs), recs)
	}
	slices.SortFunc(recs, func(a, b record) int { return strings.Compare(a.key, b.key) })
	want := []struct {
		server string
		keys   []string
	}{{"comet-1", []string{"dev-1", "dev-2"}}, {"comet-2", []string{"dev-3"}}}
	for i, w := range want {
		r := recs[i]
		if r.topic != mq.TopicPush || r.key != w.server || r.msg.Server != w.server || r.msg.Type != pb.PushMsg_PUSH ||
			r.msg.Operation != 1000 || string(r.msg.Msg) != "hello" || !slices.Equal(sortedKeys(r), w.keys) {
			t.Fatalf("record %d = %+v (keys %v), want server %s keys %v", i, r.msg, r.msg.Keys, w.server, w.keys)
		}
	}
	if n := h.counter(t, "hubuim_logic_push_offline_targets_total", nil); n != 1 {
		t.Fatalf("offline targets = %v", n)
	}
	// Only offline keys: success, nothing published.
	code, r = h.do(t, "POST", "/goim/push/keys?operation=1000&keys=nobody", testSecret, nil)
	if code != 200 || r.Code != 0 || len(h.producer.take()) != 0 {
		t.Fatalf("push to offline key: %d %+v", code, r)
	}
}

func TestHTTPPushMids(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	code, r := h.do(t, "POST", "/goim/push/mids?operation=1001&mids=7&mids=8,99", testSecret, []byte("m"))
	if code != 200 || r.Code != 0 {
		t.Fatalf("push mids: %d %+v", code, r)
	}
	recs := h.producer.take()
	got := map[string][]string{}
	for _, rec := range recs {
		if rec.msg.Type != pb.PushMsg_PUSH || rec.msg.Operation != 1001 || rec.key != rec.msg.Server {
			t.Fatalf("record %+v", rec.msg)
		}
		got[rec.msg.Server] = sortedKeys(rec)
	}
	if len(recs) != 2 || !slices.Equal(got["comet-1"], []string{"dev-1", "dev-2"}) || !slices.Equal(got["comet-2"], []string{"dev-3"}) {
		t.Fatalf("records by comet = %v (%d records)", got, len(recs))
	}
	// One lookup and one publish phase per push, however many records.
	for _, phase := range []string{"lookup", "publish"} {
		if n := h.histCount(t, "hubuim_logic_push_phase_seconds", map[string]string{"phase": phase}); n != 1 {
			t.Fatalf("push phase %s observed %d times, want 1", phase, n)
		}
	}
}

func TestHTTPPushRoomAndAll(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	if code, r := h.do(t, "POST", "/goim/push/room?operation=1002&type=live&room=1000", testSecret, []byte("r")); code != 200 || r.Code != 0 {
		t.Fatalf("push room: %d %+v", code, r)
	}
	recs := h.producer.take()
	if len(recs) != 1 || recs[0].msg.Type != pb.PushMsg_ROOM || recs[0].msg.Room != "live://1000" || recs[0].key != "live://1000" || string(recs[0].msg.Msg) != "r" {
		t.Fatalf("room records = %+v", recs)
	}
	if code, r := h.do(t, "POST", "/goim/push/all?operation=1003&speed=50", testSecret, []byte("a")); code != 200 || r.Code != 0 {
		t.Fatalf("push all: %d %+v", code, r)
	}
	recs = h.producer.take()
	if len(recs) != 1 || recs[0].msg.Type != pb.PushMsg_BROADCAST || recs[0].msg.Speed != 50 || recs[0].msg.Operation != 1003 || recs[0].key != "1003" {
		t.Fatalf("broadcast records = %+v", recs)
	}
	// Room and broadcast pushes look nothing up.
	if l, p := h.histCount(t, "hubuim_logic_push_phase_seconds", map[string]string{"phase": "lookup"}),
		h.histCount(t, "hubuim_logic_push_phase_seconds", map[string]string{"phase": "publish"}); l != 0 || p != 2 {
		t.Fatalf("push phases: lookup %d, publish %d; want 0 and 2", l, p)
	}
}

func TestHTTPErrors(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{Push: logic.PushConfig{MaxTargets: 3, MaxBody: 10, MaxOp: 2000}})
	cases := []struct {
		name, method, path, secret string
		body                       string
		status, code               int
		reason                     string
	}{
		{"no credential", "POST", "/goim/push/keys?operation=1000&keys=dev-1", "", "", 401, -401, "credential"},
		{"wrong credential", "POST", "/goim/push/keys?operation=1000&keys=dev-1", "nope", "", 401, -401, "credential"},
		{"online needs credential", "GET", "/goim/online/total", "", "", 401, -401, "credential"},
		{"wrong method", "GET", "/goim/push/keys?operation=1000&keys=dev-1", testSecret, "", 405, -400, "POST"},
		{"missing op", "POST", "/goim/push/keys?keys=dev-1", testSecret, "", 400, -400, "operation"},
		{"op not a number", "POST", "/goim/push/keys?operation=x&keys=dev-1", testSecret, "", 400, -400, "operation"},
		{"op below business range", "POST", "/goim/push/keys?operation=9&keys=dev-1", testSecret, "", 400, -400, "operation"},
		{"op above max", "POST", "/goim/push/all?operation=2001", testSecret, "", 400, -400, "operation"},
		{"no keys", "POST", "/goim/push/keys?operation=1000", testSecret, "", 400, -400, "no keys"},
		{"too many keys", "POST", "/goim/push/keys?operation=1000&keys=a,b,c,d", testSecret, "", 400, -400, "limit 3"},
		{"too many mids", "POST", "/goim/push/mids?operation=1000&mids=1,2,3,4,5", testSecret, "", 400, -400, "limit 3"},
		{"bad mid", "POST", "/goim/push/mids?operation=1000&mids=x", testSecret, "", 400, -400, "integers"},
		{"negative mid", "POST", "/goim/push/mids?operation=1000&mids=-3", testSecret, "", 400, -400, "negative"},
		{"body too large", "POST", "/goim/push/keys?operation=1000&keys=dev-1", testSecret, "01234567890", 413, -400, "too large"},
		{"room without type", "POST", "/goim/push/room?operation=1000&room=1", testSecret, "", 400, -400, "type"},
		{"room without room", "POST", "/goim/push/room?operation=1000&type=live", testSecret, "", 400, -400, "room"},
		{"bad speed", "POST", "/goim/push/all?operation=1000&speed=-1", testSecret, "", 400, -400, "speed"},
		{"top without limit", "GET", "/goim/online/top?type=live", testSecret, "", 400, -400, "limit"},
		{"top limit too big", "GET", "/goim/online/top?type=live&limit=100000", testSecret, "", 400, -400, "limit"},
		{"online room without rooms", "GET", "/goim/online/room?type=live", testSecret, "", 400, -400, "rooms"},
		{"bad lat", "GET", "/goim/nodes/weighted?lat=x", "", "", 400, -400, "lat"},
		{"lat out of range", "GET", "/goim/nodes/weighted?lat=91&lon=1", "", "", 400, -400, "lat"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, r := h.do(t, tc.method, tc.path, tc.secret, []byte(tc.body))
			if status != tc.status || r.Code != tc.code || !strings.Contains(r.Message, tc.reason) {
				t.Fatalf("got %d %+v, want %d code %d with %q", status, r, tc.status, tc.code, tc.reason)
			}
		})
	}
	if recs := h.producer.take(); len(recs) != 0 {
		t.Fatalf("rejected pushes published %d records", len(recs))
	}
	if n := h.counter(t, "hubuim_logic_push_requests_total", map[string]string{"kind": "keys", "result": "bad_request"}); n < 6 {
		t.Fatalf("bad_request pushes by keys counted %v", n)
	}
}

func TestHTTPProducerDown(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	h.producer.err = errors.New("kafka: leader not available")
	status, r := h.do(t, "POST", "/goim/push/keys?operation=1000&keys=dev-1", testSecret, []byte("x"))
	if status != 503 || r.Code != -500 || strings.Contains(r.Message, "kafka") {
		t.Fatalf("producer down: %d %+v", status, r)
	}
	// Several comets: the records are published concurrently.
	status, r = h.do(t, "POST", "/goim/push/keys?operation=1000&keys=dev-1,dev-3", testSecret, []byte("x"))
	if status != 503 || r.Code != -500 {
		t.Fatalf("producer down, two comets: %d %+v", status, r)
	}
	if n := h.counter(t, "hubuim_logic_push_requests_total", map[string]string{"kind": "keys", "result": "unavailable"}); n != 2 {
		t.Fatalf("unavailable pushes counted %v, want 2", n)
	}
}

func TestHTTPOnline(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	ctx := context.Background()
	_ = h.store.SetRoomCounts(ctx, "comet-1", map[string]int32{"live://1": 5, "live://2": 9, "chat://1": 100}, time.Minute)
	_ = h.store.SetRoomCounts(ctx, "comet-2", map[string]int32{"live://1": 5, "live://3": 1}, time.Minute)

	status, r := h.do(t, "GET", "/goim/online/top?type=live&limit=2", testSecret, nil)
	if status != 200 || string(r.Data) != `[{"room_id":"1","count":10},{"room_id":"2","count":9}]` {
		t.Fatalf("online/top: %d %s", status, r.Data)
	}
	status, r = h.do(t, "GET", "/goim/online/room?type=live&rooms=1,3&rooms=404", testSecret, nil)
	var rooms map[string]int32
	_ = json.Unmarshal(r.Data, &rooms)
	if status != 200 || rooms["1"] != 10 || rooms["3"] != 1 || rooms["404"] != 0 || len(rooms) != 3 {
		t.Fatalf("online/room: %d %s", status, r.Data)
	}
	// IP counts add up across comets like connection counts; a comet that
	// does not report one (comet-3, an older version) adds 0.
	h.watcher.ch <- []discovery.Instance{
		{ID: "comet-1", Conns: 30, IPs: 20, Addrs: map[string]string{discovery.AddrTCP: "10.0.0.1:3101"}},
		{ID: "comet-2", Conns: 12, IPs: 5, Addrs: map[string]string{discovery.AddrTCP: "10.0.0.2:3101"}},
		{ID: "comet-3", Conns: 1, Addrs: map[string]string{discovery.AddrTCP: "10.0.0.3:3101"}},
	}
	eventually(t, "comets from discovery", func() bool { return len(h.l.Comets()) == 3 })
	status, r = h.do(t, "GET", "/goim/online/total", testSecret, nil)
	if status != 200 || string(r.Data) != `{"conn_count":43,"ip_count":25}` {
		t.Fatalf("online/total: %d %s", status, r.Data)
	}
	ips, conns := h.l.OnlineTotal(ctx)
	if ips != 25 || conns != 43 {
		t.Fatalf("OnlineTotal = %d ips, %d conns; want 25, 43", ips, conns)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testSecret)
	rep, err := pb.NewPushClient(h.grpcClient(t)).OnlineTotal(authed, &pb.OnlineTotalReq{})
	if err != nil || rep.GetIpCount() != 25 || rep.GetConnCount() != 43 {
		t.Fatalf("gRPC OnlineTotal = %v, %v; want ip_count 25, conn_count 43", rep, err)
	}
	status, r = h.do(t, "GET", "/goim/nodes/instances", testSecret, nil)
	var ins []discovery.Instance
	_ = json.Unmarshal(r.Data, &ins)
	if status != 200 || len(ins) != 3 || ins[0].ID != "comet-1" || ins[0].IPs != 20 {
		t.Fatalf("nodes/instances: %d %s", status, r.Data)
	}
}

func TestUnauthenticatedPushAPI(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{Push: logic.PushConfig{Unauthenticated: true}})
	if status, r := h.do(t, "POST", "/goim/push/all?operation=1000", "", nil); status != 200 || r.Code != 0 {
		t.Fatalf("unauthenticated push: %d %+v", status, r)
	}
}

func TestConfigValidation(t *testing.T) {
	deps := logic.Deps{Store: session.NewMemory(), Verifier: fakeVerifier{}, Producer: &fakeProducer{}}
	cases := map[string]logic.Config{
		"push.secret":             {},
		"nodes.regions[0].cidr":   {Push: logic.PushConfig{Secret: "x"}, Nodes: logic.NodesConfig{Regions: []logic.RegionCIDR{{CIDR: "10.0.0.0/33", Region: "a"}}}},
		"push.max_op":             {Push: logic.PushConfig{Secret: "x", MaxOp: 5}},
		"conn.session_ttl":        {Push: logic.PushConfig{Secret: "x"}, Conn: logic.ConnConfig{SessionTTL: time.Second, Heartbeat: time.Minute}},
		"nodes.backoff.jitter":    {Push: logic.PushConfig{Secret: "x"}, Nodes: logic.NodesConfig{Backoff: logic.BackoffConfig{Jitter: 2}}},
		"nodes.regions[0].region": {Push: logic.PushConfig{Secret: "x"}, Nodes: logic.NodesConfig{Regions: []logic.RegionCIDR{{CIDR: "10.0.0.0/8"}}}},
	}
	for field, cfg := range cases {
		_, err := logic.New(cfg, deps)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Fatalf("config for %s: err = %v", field, err)
		}
	}
	if _, err := logic.New(logic.Config{Push: logic.PushConfig{Secret: "x"}}, logic.Deps{}); err == nil {
		t.Fatal("New without deps succeeded")
	}
}
