package im

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
)

// maxHTTPBody bounds a client API request body.
const maxHTTPBody = 64 << 10

// ClientAuth authenticates a client HTTP request and returns its user id.
// Logic builds it from its auth verifier (the same token as the long
// connection).
type ClientAuth func(r *http.Request) (int64, error)

// ErrUnauthenticated is what a ClientAuth returns for a missing or bad
// credential.
var ErrUnauthenticated = errors.New("im: unauthenticated")

// ClientHandler serves the client HTTP API (short connections):
//
//	POST   /im/v1/sync                          Sync (protojson) → SyncReply
//	GET    /im/v1/groups                        my groups
//	POST   /im/v1/groups                        {"name":..,"members":[..]} → group
//	GET    /im/v1/groups/{id}/members           members (members only)
//	POST   /im/v1/groups/{id}/members           {"users":[..]} (owner only)
//	DELETE /im/v1/groups/{id}/members/{user}    remove (owner) or leave (self)
//	POST   /im/v1/presence/subscribe            {"users":[..]} → their state; then op 29 events
//	POST   /im/v1/presence/unsubscribe          {"users":[..]}
//	GET    /im/v1/presence?users=1,2            their state now
//
// Replies use the goim envelope {"code":0,"message":"","data":...}; code is
// the protocol.Status number of a refusal.
//
// presence may be nil (no presence routes).
func ClientHandler(svc *Service, groups *Groups, presence *Presence, auth ClientAuth) http.Handler {
	h := &clientAPI{svc: svc, groups: groups, presence: presence, auth: auth}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /im/v1/sync", h.with(h.sync))
	mux.HandleFunc("GET /im/v1/groups", h.with(h.myGroups))
	mux.HandleFunc("POST /im/v1/groups", h.with(h.createGroup))
	mux.HandleFunc("GET /im/v1/groups/{id}/members", h.with(h.members))
	mux.HandleFunc("POST /im/v1/groups/{id}/members", h.with(h.addMembers))
	mux.HandleFunc("DELETE /im/v1/groups/{id}/members/{user}", h.with(h.removeMember))
	if presence != nil {
		mux.HandleFunc("POST /im/v1/presence/subscribe", h.with(h.subscribe))
		mux.HandleFunc("POST /im/v1/presence/unsubscribe", h.with(h.unsubscribe))
		mux.HandleFunc("GET /im/v1/presence", h.with(h.presenceStatus))
	}
	return mux
}

type clientAPI struct {
	svc      *Service
	groups   *Groups
	presence *Presence
	auth     ClientAuth
}

type envelope struct {
	Code    int32  `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

type apiFunc func(ctx context.Context, user int64, r *http.Request) (any, error)

func (h *clientAPI) with(fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, err := h.auth(r)
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, envelope{Code: int32(protocol.Status_STATUS_UNAUTHORIZED), Message: "unauthenticated"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxHTTPBody)
		data, err := fn(r.Context(), user, r)
		if err != nil {
			st, reason := h.svc.statusOf("http", err)
			writeJSON(w, httpStatus(st), envelope{Code: int32(st), Message: reason})
			return
		}
		if m, ok := data.(proto.Message); ok {
			raw, err := protojson.Marshal(m)
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, envelope{Code: int32(protocol.Status_STATUS_INTERNAL), Message: "encode"})
				return
			}
			data = json.RawMessage(raw)
		}
		writeJSON(w, http.StatusOK, envelope{Data: data})
	}
}

func httpStatus(st protocol.Status) int {
	switch st {
	case protocol.Status_STATUS_BAD_REQUEST:
		return http.StatusBadRequest
	case protocol.Status_STATUS_UNAUTHORIZED:
		return http.StatusUnauthorized
	case protocol.Status_STATUS_FORBIDDEN:
		return http.StatusForbidden
	case protocol.Status_STATUS_NOT_FOUND:
		return http.StatusNotFound
	case protocol.Status_STATUS_TOO_LARGE:
		return http.StatusRequestEntityTooLarge
	case protocol.Status_STATUS_RATE_LIMITED:
		return http.StatusTooManyRequests
	case protocol.Status_STATUS_UNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func badRequest(reason string) error { return errStatus(protocol.Status_STATUS_BAD_REQUEST, reason) }

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errStatus(protocol.Status_STATUS_TOO_LARGE, "request body too large")
		}
		return nil, badRequest("unreadable body")
	}
	return b, nil
}

func pathID(r *http.Request, name string) (int64, error) {
	v, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || v <= 0 {
		return 0, badRequest(name + " must be a positive integer")
	}
	return v, nil
}

func (h *clientAPI) sync(ctx context.Context, user int64, r *http.Request) (any, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	req := &protocol.Sync{}
	if err := protojson.Unmarshal(body, req); err != nil {
		return nil, badRequest("malformed Sync JSON")
	}
	reply := h.svc.Sync(ctx, user, req)
	if reply.Status != protocol.Status_STATUS_OK {
		return nil, errStatus(reply.Status, reply.Reason)
	}
	return reply, nil
}

func (h *clientAPI) myGroups(ctx context.Context, user int64, _ *http.Request) (any, error) {
	gs, err := h.groups.UserGroups(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(gs))
	for _, g := range gs {
		raw, err := protojson.Marshal(g)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

func (h *clientAPI) createGroup(ctx context.Context, user int64, r *http.Request) (any, error) {
	var req struct {
		Name    string  `json:"name"`
		Members []int64 `json:"members"`
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, badRequest("malformed JSON")
	}
	return h.groups.Create(ctx, user, 0, req.Name, user, req.Members)
}

func (h *clientAPI) members(ctx context.Context, user int64, r *http.Request) (any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return nil, err
	}
	return h.groups.Members(ctx, user, id)
}

func (h *clientAPI) addMembers(ctx context.Context, user int64, r *http.Request) (any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return nil, err
	}
	var req struct {
		Users []int64 `json:"users"`
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Users) == 0 {
		return nil, badRequest(`body must be {"users":[...]} with at least one user`)
	}
	n, err := h.groups.AddMembers(ctx, user, id, req.Users)
	if err != nil {
		return nil, err
	}
	return map[string]int{"changed": n}, nil
}

func (h *clientAPI) removeMember(ctx context.Context, user int64, r *http.Request) (any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return nil, err
	}
	target, err := pathID(r, "user")
	if err != nil {
		return nil, err
	}
	n, err := h.groups.RemoveMembers(ctx, user, id, []int64{target})
	if err != nil {
		return nil, err
	}
	return map[string]int{"changed": n}, nil
}

func usersBody(r *http.Request) ([]int64, error) {
	var req struct {
		Users []int64 `json:"users"`
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, badRequest(`body must be {"users":[...]}`)
	}
	return req.Users, nil
}

func (h *clientAPI) subscribe(ctx context.Context, user int64, r *http.Request) (any, error) {
	users, err := usersBody(r)
	if err != nil {
		return nil, err
	}
	return h.presence.Subscribe(ctx, user, users)
}

func (h *clientAPI) unsubscribe(ctx context.Context, user int64, r *http.Request) (any, error) {
	users, err := usersBody(r)
	if err != nil {
		return nil, err
	}
	return map[string]int{"changed": len(users)}, h.presence.Unsubscribe(ctx, user, users)
}

func (h *clientAPI) presenceStatus(ctx context.Context, _ int64, r *http.Request) (any, error) {
	var users []int64
	for _, part := range strings.Split(r.URL.Query().Get("users"), ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return nil, badRequest("users must be comma-separated user ids")
		}
		users = append(users, id)
	}
	return h.presence.Status(ctx, users)
}
