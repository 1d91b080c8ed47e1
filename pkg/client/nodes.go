package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxNodeListBytes bounds the node list response read into memory.
const maxNodeListBytes = 1 << 20

// nodeListEnvelope is goim's JSON envelope around the node list.
type nodeListEnvelope struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// nodeListData accepts both HubuIM's node objects (logic.NodesReply as
// JSON, snake_case or protojson camelCase) and goim's list of hosts plus
// ports.
type nodeListData struct {
	Domain  string            `json:"domain"`
	Nodes   []json.RawMessage `json:"nodes"`
	TCPPort json.Number       `json:"tcp_port"`
	WSPort  json.Number       `json:"ws_port"`
	WSSPort json.Number       `json:"wss_port"`

	// Connection hints: HubuIM's in milliseconds (snake_case or protojson
	// camelCase, whose int64 are strings: json.Number takes both), goim's
	// in seconds.
	HeartbeatMS  json.Number  `json:"heartbeat_ms"`
	HeartbeatMSC json.Number  `json:"heartbeatMs"`
	HeartbeatS   json.Number  `json:"heartbeat"`
	Backoff      *nodeBackoff `json:"backoff"`
}

// nodeBackoff is the reconnect backoff a node list suggests.
type nodeBackoff struct {
	BaseMS  json.Number `json:"base_delay_ms"`
	BaseMSC json.Number `json:"baseDelayMs"`
	MaxMS   json.Number `json:"max_delay_ms"`
	MaxMSC  json.Number `json:"maxDelayMs"`
	BaseS   json.Number `json:"base_delay"`
	MaxS    json.Number `json:"max_delay"`
	Factor  float64     `json:"factor"`
	Jitter  float64     `json:"jitter"`
}

// nodeHints are the connection settings a node list suggests; zero
// fields suggest nothing.
type nodeHints struct {
	heartbeat time.Duration
	backoff   Backoff
}

// maxHintMs bounds a server's time hints (a day): larger values, or ones
// that would overflow a Duration, are ignored.
const maxHintMs = 24 * 60 * 60 * 1000

// hintDuration is the first of ms (milliseconds) and s (seconds) that
// holds a positive number within maxHintMs; 0 when none does.
func hintDuration(ms []json.Number, s json.Number) time.Duration {
	for _, n := range ms {
		if v, err := n.Int64(); err == nil && v > 0 && v <= maxHintMs {
			return time.Duration(v) * time.Millisecond
		}
	}
	if v, err := s.Int64(); err == nil && v > 0 && v <= maxHintMs/1000 {
		return time.Duration(v) * time.Second
	}
	return 0
}

func (d nodeListData) hints() nodeHints {
	h := nodeHints{heartbeat: hintDuration([]json.Number{d.HeartbeatMS, d.HeartbeatMSC}, d.HeartbeatS)}
	if b := d.Backoff; b != nil {
		h.backoff = Backoff{
			Base:   hintDuration([]json.Number{b.BaseMS, b.BaseMSC}, b.BaseS),
			Max:    hintDuration([]json.Number{b.MaxMS, b.MaxMSC}, b.MaxS),
			Factor: b.Factor,
			Jitter: b.Jitter,
		}
	}
	return h
}

// withHints is b slowed down by a node list's suggestion: the server may
// stretch the delays (to spread a reconnect storm) but never shorten them
// below the client's configuration — base, cap and growth factor are each
// the larger of the two, and a jitter hint is ignored (a wider jitter
// would allow shorter delays).
func (b Backoff) withHints(h Backoff) Backoff {
	b.Base = max(b.Base, h.Base)
	b.Max = max(b.Max, h.Max, b.Base)
	b.Factor = max(b.Factor, h.Factor)
	return b
}

type nodeObject struct {
	TCPAddr     string `json:"tcp_addr"`
	TCPAddrC    string `json:"tcpAddr"`
	TCPTLSAddr  string `json:"tcp_tls_addr"`
	TCPTLSAddrC string `json:"tcpTlsAddr"`
	WSAddr      string `json:"ws_addr"`
	WSAddrC     string `json:"wsAddr"`
	WSSAddr     string `json:"wss_addr"`
	WSSAddrC    string `json:"wssAddr"`
}

func (n nodeObject) addr(transport string) string {
	switch transport {
	case TransportTLS:
		return first(n.TCPTLSAddr, n.TCPTLSAddrC)
	case TransportWS:
		return first(n.WSAddr, n.WSAddrC)
	case TransportWSS:
		return first(n.WSSAddr, n.WSSAddrC)
	default:
		return first(n.TCPAddr, n.TCPAddrC)
	}
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fetchNodes gets the node list and returns the addresses to dial for
// transport, in the server's order, and the list's connection hints.
func fetchNodes(ctx context.Context, hc *http.Client, nodeURL, transport, platform string) ([]string, nodeHints, error) {
	u, err := url.Parse(nodeURL)
	if err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: %w", ErrNodeList, err)
	}
	if platform != "" {
		q := u.Query()
		q.Set("platform", platform)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: %w", ErrNodeList, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: %w", ErrNodeList, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nodeHints{}, fmt.Errorf("%w: HTTP %s", ErrNodeList, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxNodeListBytes))
	if err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: %w", ErrNodeList, err)
	}
	return parseNodeList(body, transport)
}

func parseNodeList(body []byte, transport string) ([]string, nodeHints, error) {
	var env nodeListEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: %w", ErrNodeList, err)
	}
	if env.Code != 0 {
		return nil, nodeHints{}, fmt.Errorf("%w: code %d: %s", ErrNodeList, env.Code, env.Message)
	}
	var data nodeListData
	if err := json.Unmarshal(env.Data, &data); err != nil {
		return nil, nodeHints{}, fmt.Errorf("%w: data: %w", ErrNodeList, err)
	}
	var addrs []string
	for _, raw := range data.Nodes {
		var a string
		var host string
		if err := json.Unmarshal(raw, &host); err == nil {
			a = goimAddr(host, transport, data)
		} else {
			var obj nodeObject
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, nodeHints{}, fmt.Errorf("%w: node: %w", ErrNodeList, err)
			}
			a = obj.addr(transport)
		}
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = transport + "://" + a
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, nodeHints{}, fmt.Errorf("%w: no %s node", ErrNodeList, transport)
	}
	return addrs, data.hints(), nil
}

// goimAddr builds host:port from goim's node list, where nodes are hosts
// and ports are given once per transport.
func goimAddr(host, transport string, d nodeListData) string {
	if host == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	var port json.Number
	switch transport {
	case TransportWS:
		port = d.WSPort
	case TransportWSS:
		port = d.WSSPort
		if d.Domain != "" {
			host = d.Domain
		}
	default:
		port = d.TCPPort
	}
	if _, err := strconv.Atoi(port.String()); err != nil {
		return ""
	}
	return net.JoinHostPort(host, port.String())
}
