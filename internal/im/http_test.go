package im

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/store"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func newClientAPI(t *testing.T) (*harness, *httptest.Server) {
	t.Helper()
	h := newHarness(t, Config{})
	v, err := auth.New(auth.Config{Mode: "jwt", JWT: auth.JWTConfig{Secret: testSecret}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := NewGroups(h.st, h.svc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ClientHandler(h.svc, groups, nil, VerifierAuth(v)))
	t.Cleanup(srv.Close)
	return h, srv
}

func call(t *testing.T, srv *httptest.Server, method, path string, user int64, body string) (int, envelope) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
	if user != 0 {
		tok, err := auth.SignHS256([]byte(testSecret), user, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, raw)
	}
	return resp.StatusCode, env
}

func TestClientHTTPGroupsAndSync(t *testing.T) {
	h, srv := newClientAPI(t)

	if code, env := call(t, srv, "GET", "/im/v1/groups", 0, ""); code != http.StatusUnauthorized || env.Code != int32(protocol.Status_STATUS_UNAUTHORIZED) {
		t.Fatalf("no token: %d %+v", code, env)
	}
	code, env := call(t, srv, "POST", "/im/v1/groups", 1, `{"name":"team","members":[2,3]}`)
	if code != http.StatusOK {
		t.Fatalf("create: %d %+v", code, env)
	}
	info := env.Data.(map[string]any)
	gid := int64(0)
	switch v := info["groupId"].(type) {
	case string:
		gid, _ = strconv.ParseInt(v, 10, 64)
	case float64:
		gid = int64(v)
	}
	if gid <= 0 || info["memberCount"].(float64) != 3 {
		t.Fatalf("created %v", info)
	}
	path := "/im/v1/groups/" + strconv.FormatInt(gid, 10) + "/members"
	if code, _ := call(t, srv, "POST", path, 2, `{"users":[4]}`); code != http.StatusForbidden {
		t.Fatalf("non-owner add: %d", code)
	}
	if code, _ := call(t, srv, "POST", path, 1, `{"users":[4]}`); code != http.StatusOK {
		t.Fatalf("owner add: %d", code)
	}
	if code, _ := call(t, srv, "GET", path, 9, ""); code != http.StatusForbidden {
		t.Fatalf("outsider members: %d", code)
	}
	if code, env := call(t, srv, "GET", path, 4, ""); code != http.StatusOK || len(env.Data.([]any)) != 4 {
		t.Fatalf("member list: %d %+v", code, env)
	}
	if code, _ := call(t, srv, "DELETE", path+"/3", 3, ""); code != http.StatusOK {
		t.Fatalf("leave: %d", code)
	}
	if code, _ := call(t, srv, "DELETE", path+"/1", 1, ""); code != http.StatusBadRequest {
		t.Fatalf("owner removing itself: %d", code)
	}
	if code, _ := call(t, srv, "GET", "/im/v1/groups/abc/members", 1, ""); code != http.StatusBadRequest {
		t.Fatalf("bad id: %d", code)
	}

	// Sync over HTTP sees what was sent over the long connection path.
	ack := h.svc.Send(context.Background(), 1, "d", &protocol.MsgSend{ClientMsgId: "x", ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: gid, Payload: []byte("p")})
	if ack.Status != protocol.Status_STATUS_OK {
		t.Fatal(ack)
	}
	code, env = call(t, srv, "POST", "/im/v1/sync", 2, `{"convId":"`+store.GroupConvID(gid)+`"}`)
	if code != http.StatusOK {
		t.Fatalf("sync: %d %+v", code, env)
	}
	convs := env.Data.(map[string]any)["convs"].([]any)
	if len(convs) != 1 || len(convs[0].(map[string]any)["msgs"].([]any)) != 1 {
		t.Fatalf("sync data %v", env.Data)
	}
	if code, _ := call(t, srv, "POST", "/im/v1/sync", 3, `{"convId":"`+store.GroupConvID(gid)+`"}`); code != http.StatusForbidden {
		t.Fatalf("sync after leaving: %d", code)
	}
	if code, _ := call(t, srv, "POST", "/im/v1/sync", 2, `{not json`); code != http.StatusBadRequest {
		t.Fatalf("malformed sync: %d", code)
	}
	big := bytes.Repeat([]byte("a"), maxHTTPBody+1)
	if code, _ := call(t, srv, "POST", "/im/v1/sync", 2, string(big)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize body: %d", code)
	}
}

func TestGroupsServer(t *testing.T) {
	h := newHarness(t, Config{})
	g, _ := NewGroups(h.st, h.svc)
	s := NewGroupsServer(g)
	ctx := context.Background()
	info, err := s.CreateGroup(ctx, &logicpb.CreateGroupReq{GroupId: 77, Name: "ops", Owner: 5, Members: []int64{6}})
	if err != nil || info.GroupId != 77 || info.MemberCount != 2 {
		t.Fatalf("create = %v, %v", info, err)
	}
	if _, err := s.CreateGroup(ctx, &logicpb.CreateGroupReq{GroupId: 77, Owner: 5}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("duplicate id: %v", err)
	}
	if r, err := s.AddMembers(ctx, &logicpb.MembersReq{GroupId: 77, Users: []int64{6, 7}}); err != nil || r.Changed != 1 {
		t.Fatalf("add = %v, %v", r, err)
	}
	if _, err := s.Members(ctx, &logicpb.GroupReq{GroupId: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown group: %v", err)
	}
	if l, err := s.UserGroups(ctx, &logicpb.UserGroupsReq{User: 7}); err != nil || len(l.Groups) != 1 {
		t.Fatalf("user groups = %v, %v", l, err)
	}
	if _, err := s.Sync(ctx, &logicpb.SyncReq{User: 0}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("sync without user: %v", err)
	}
	if r, err := s.Sync(ctx, &logicpb.SyncReq{User: 9, Sync: &protocol.Sync{ConvId: store.GroupConvID(77)}}); err != nil || r.Status != protocol.Status_STATUS_FORBIDDEN {
		t.Fatalf("outsider sync = %v, %v", r, err)
	}
}
