package logic

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
)

// goim's envelope codes.
const (
	CodeOK           = 0
	CodeRequestErr   = -400
	CodeUnauthorized = -401
	CodeServerErr    = -500
)

// envelope is goim's JSON answer.
type envelope struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// HTTPHandler returns the goim-compatible HTTP API (docs/push-api.md).
// Concurrent pushes by keys or mids share their store lookups (see
// coalescer).
func (l *Logic) HTTPHandler() http.Handler {
	lk := l.newPushLookups()
	mux := http.NewServeMux()
	mux.HandleFunc("/goim/push/keys", l.authed(http.MethodPost, kindKeys, func(w http.ResponseWriter, r *http.Request) {
		l.httpPushKeys(w, r, lk)
	}))
	mux.HandleFunc("/goim/push/mids", l.authed(http.MethodPost, kindMids, func(w http.ResponseWriter, r *http.Request) {
		l.httpPushMids(w, r, lk)
	}))
	mux.HandleFunc("/goim/push/room", l.authed(http.MethodPost, kindRoom, l.httpPushRoom))
	mux.HandleFunc("/goim/push/all", l.authed(http.MethodPost, kindAll, l.httpPushAll))
	mux.HandleFunc("/goim/online/top", l.authed(http.MethodGet, "online", l.httpOnlineTop))
	mux.HandleFunc("/goim/online/room", l.authed(http.MethodGet, "online", l.httpOnlineRoom))
	mux.HandleFunc("/goim/online/total", l.authed(http.MethodGet, "online", l.httpOnlineTotal))
	mux.HandleFunc("/goim/nodes/weighted", l.method(http.MethodGet, l.httpNodesWeighted))
	mux.HandleFunc("/goim/nodes/instances", l.authed(http.MethodGet, "online", l.httpNodesInstances))
	return mux
}

func writeJSON(w http.ResponseWriter, httpStatus int, e envelope) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(e)
}

// okEmptyBody is writeJSON's encoding of envelope{Code: CodeOK}: the
// answer of every accepted push, written without encoding it each time.
const okEmptyBody = `{"code":0,"message":""}` + "\n"

// writeOKEmpty answers a success without data.
func writeOKEmpty(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, okEmptyBody)
}

func writeOK(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, envelope{Code: CodeOK, Data: data})
}

// writeErr answers a core error; the message is safe to show.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrTooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, envelope{Code: CodeRequestErr, Message: err.Error()})
	case errors.Is(err, ErrInvalidArgument):
		writeJSON(w, http.StatusBadRequest, envelope{Code: CodeRequestErr, Message: err.Error()})
	case errors.Is(err, ErrUnauthorized):
		writeJSON(w, http.StatusUnauthorized, envelope{Code: CodeUnauthorized, Message: "missing or wrong push credential"})
	case errors.Is(err, ErrUnavailable):
		writeJSON(w, http.StatusServiceUnavailable, envelope{Code: CodeServerErr, Message: "a dependency is unavailable, retry later"})
	default:
		writeJSON(w, http.StatusInternalServerError, envelope{Code: CodeServerErr, Message: "internal error"})
	}
}

func (l *Logic) method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeJSON(w, http.StatusMethodNotAllowed, envelope{Code: CodeRequestErr, Message: "method must be " + m})
			return
		}
		h(w, r)
	}
}

func (l *Logic) authed(m, kind string, h http.HandlerFunc) http.HandlerFunc {
	return l.method(m, func(w http.ResponseWriter, r *http.Request) {
		if err := l.checkBearer(r.Header.Get(authHeader)); err != nil {
			l.m.push.WithLabelValues(kind, resultUnauthorized).Inc()
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeErr(w, err)
			return
		}
		h(w, r)
	})
}

// readBody reads the pushed message, refusing more than push.max_body.
func (l *Logic) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := readAll(http.MaxBytesReader(w, r.Body, int64(l.cfg.Push.MaxBody)), r.ContentLength, l.cfg.Push.MaxBody)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, fmt.Errorf("%w: limit %d bytes", ErrTooLarge, l.cfg.Push.MaxBody)
	case err != nil:
		return nil, fmt.Errorf("%w: reading body: %w", ErrInvalidArgument, err)
	}
	return body, nil
}

// readAll is io.ReadAll with the buffer sized from the request's
// Content-Length (when known and at most limit; rd enforces the limit):
// one allocation for a typical push body instead of io.ReadAll's 512 bytes
// and up.
func readAll(rd io.Reader, contentLength int64, limit int) ([]byte, error) {
	if contentLength < 0 || contentLength > int64(limit) {
		return io.ReadAll(rd)
	}
	// One spare byte: the read that sees EOF needs room.
	buf := make([]byte, 0, contentLength+1)
	for {
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // longer than announced: grow
		}
	}
}

// list returns the values of a query parameter given repeatedly or
// comma-separated, at most limit+1 of them (enough to report "too many").
func list(q url.Values, name string, limit int) []string {
	var out []string
	for _, v := range q[name] {
		for part := range strings.SplitSeq(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
				if len(out) > limit {
					return out
				}
			}
		}
	}
	return out
}

func intParam(q url.Values, name string, bits int, required bool) (int64, error) {
	v := q.Get(name)
	if v == "" {
		if required {
			return 0, fmt.Errorf("%w: %s is required", ErrInvalidArgument, name)
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be an integer", ErrInvalidArgument, name)
	}
	return n, nil
}

func (l *Logic) httpPushKeys(w http.ResponseWriter, r *http.Request, lk *pushLookups) {
	q := r.URL.Query()
	op, err := intParam(q, "operation", 32, true)
	if err != nil {
		writeErr(w, l.count(kindKeys, err))
		return
	}
	keys := list(q, "keys", l.cfg.Push.MaxTargets)
	body, err := l.readBody(w, r)
	if err != nil {
		writeErr(w, l.count(kindKeys, err))
		return
	}
	if err := l.count(kindKeys, l.pushKeys(r.Context(), lk, int32(op), keys, body)); err != nil {
		writeErr(w, err)
		return
	}
	writeOKEmpty(w)
}

func (l *Logic) httpPushMids(w http.ResponseWriter, r *http.Request, lk *pushLookups) {
	q := r.URL.Query()
	op, err := intParam(q, "operation", 32, true)
	if err != nil {
		writeErr(w, l.count(kindMids, err))
		return
	}
	raw := list(q, "mids", l.cfg.Push.MaxTargets)
	mids := make([]int64, len(raw))
	for i, s := range raw {
		if mids[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			writeErr(w, l.count(kindMids, fmt.Errorf("%w: mids must be integers", ErrInvalidArgument)))
			return
		}
	}
	body, err := l.readBody(w, r)
	if err != nil {
		writeErr(w, l.count(kindMids, err))
		return
	}
	if err := l.count(kindMids, l.pushMids(r.Context(), lk, int32(op), mids, body)); err != nil {
		writeErr(w, err)
		return
	}
	writeOKEmpty(w)
}

func (l *Logic) httpPushRoom(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op, err := intParam(q, "operation", 32, true)
	if err != nil {
		writeErr(w, l.count(kindRoom, err))
		return
	}
	body, err := l.readBody(w, r)
	if err != nil {
		writeErr(w, l.count(kindRoom, err))
		return
	}
	if err := l.PushRoom(r.Context(), int32(op), q.Get("type"), q.Get("room"), body); err != nil {
		writeErr(w, err)
		return
	}
	writeOKEmpty(w)
}

func (l *Logic) httpPushAll(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op, err := intParam(q, "operation", 32, true)
	if err != nil {
		writeErr(w, l.count(kindAll, err))
		return
	}
	speed, err := intParam(q, "speed", 32, false)
	if err != nil {
		writeErr(w, l.count(kindAll, err))
		return
	}
	body, err := l.readBody(w, r)
	if err != nil {
		writeErr(w, l.count(kindAll, err))
		return
	}
	if err := l.PushAll(r.Context(), int32(op), int32(speed), body); err != nil {
		writeErr(w, err)
		return
	}
	writeOKEmpty(w)
}

type roomCountJSON struct {
	RoomID string `json:"room_id"`
	Count  int32  `json:"count"`
}

func (l *Logic) httpOnlineTop(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 32, true)
	if err != nil {
		writeErr(w, err)
		return
	}
	top, err := l.OnlineTop(r.Context(), q.Get("type"), int(limit))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := make([]roomCountJSON, len(top))
	for i, t := range top {
		out[i] = roomCountJSON{RoomID: t.RoomId, Count: t.Count}
	}
	writeOK(w, out)
}

func (l *Logic) httpOnlineRoom(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rooms := list(q, "rooms", l.cfg.Push.MaxTargets)
	counts, err := l.OnlineRoom(r.Context(), q.Get("type"), rooms)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeOK(w, counts)
}

func (l *Logic) httpOnlineTotal(w http.ResponseWriter, r *http.Request) {
	ips, conns := l.OnlineTotal(r.Context())
	writeOK(w, map[string]int64{"ip_count": ips, "conn_count": conns})
}

type nodeJSON struct {
	ID         string `json:"id"`
	Region     string `json:"region,omitempty"`
	TCPAddr    string `json:"tcp_addr,omitempty"`
	WSAddr     string `json:"ws_addr,omitempty"`
	WSSAddr    string `json:"wss_addr,omitempty"`
	TCPTLSAddr string `json:"tcp_tls_addr,omitempty"`
}

type backoffJSON struct {
	MaxDelayMs  int64   `json:"max_delay_ms"`
	BaseDelayMs int64   `json:"base_delay_ms"`
	Factor      float64 `json:"factor"`
	Jitter      float64 `json:"jitter"`
}

type nodesJSON struct {
	Domain       string      `json:"domain"`
	Nodes        []nodeJSON  `json:"nodes"`
	HeartbeatMs  int64       `json:"heartbeat_ms"`
	HeartbeatMax int64       `json:"heartbeat_max"`
	Backoff      backoffJSON `json:"backoff"`
}

// clientIP is the client's address: the peer, or with nodes.trust_proxy
// the first X-Forwarded-For entry or X-Real-IP.
func (l *Logic) clientIP(r *http.Request) string {
	if l.cfg.Nodes.TrustProxy {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(first)
		}
		if xr := r.Header.Get("X-Real-IP"); xr != "" {
			return strings.TrimSpace(xr)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func floatParam(r *http.Request, name string) (float64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be a number", ErrInvalidArgument, name)
	}
	return f, nil
}

func (l *Logic) httpNodesWeighted(w http.ResponseWriter, r *http.Request) {
	lat, err := floatParam(r, "lat")
	if err != nil {
		writeErr(w, err)
		return
	}
	lon, err := floatParam(r, "lon")
	if err != nil {
		writeErr(w, err)
		return
	}
	q := r.URL.Query()
	reply, err := l.Nodes(&pb.NodesReq{
		Platform: q.Get("platform"),
		Region:   q.Get("region"),
		Lat:      lat,
		Lon:      lon,
		ClientIp: l.clientIP(r),
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	out := nodesJSON{
		Domain:       reply.Domain,
		Nodes:        make([]nodeJSON, len(reply.Nodes)),
		HeartbeatMs:  reply.HeartbeatMs,
		HeartbeatMax: reply.HeartbeatMax,
		Backoff: backoffJSON{
			MaxDelayMs:  reply.Backoff.GetMaxDelayMs(),
			BaseDelayMs: reply.Backoff.GetBaseDelayMs(),
			Factor:      reply.Backoff.GetFactor(),
			Jitter:      reply.Backoff.GetJitter(),
		},
	}
	for i, n := range reply.Nodes {
		out.Nodes[i] = nodeJSON{ID: n.Id, Region: n.Region, TCPAddr: n.TcpAddr, WSAddr: n.WsAddr, WSSAddr: n.WssAddr, TCPTLSAddr: n.TcpTlsAddr}
	}
	writeOK(w, out)
}

func (l *Logic) httpNodesInstances(w http.ResponseWriter, _ *http.Request) {
	comets := l.Comets()
	if comets == nil {
		comets = []discovery.Instance{}
	}
	writeOK(w, comets)
}
