package client

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
	"google.golang.org/protobuf/proto"
)

// fakeServer is a comet that speaks the frame protocol well enough to
// exercise the SDK: auth, heartbeats, MsgSend with dedup and seq, Sync from
// an in-memory store, read marks, rooms, business echo; pushes on demand;
// and faults (dropped ACKs and heartbeat replies, killed connections).
type fakeServer struct {
	t         testing.TB
	transport string
	addr      string // for Config.Addrs, with scheme
	certPool  *x509.CertPool
	closeFn   func()

	mu         sync.Mutex
	conns      map[*fakeConn]struct{}
	auths      []authBody
	keyN       int
	hbAnswer   bool
	hbCount    int
	dropAcks   int                                     // MsgSends to leave unanswered
	onMsgSend  func(*fakeConn, *protocol.MsgSend) bool // false: handled, no ACK
	sends      []*protocol.MsgSend
	acks       map[string]*protocol.MsgSendAck
	counters   map[string]int64
	store      map[string][]*protocol.Msg
	syncs      []*protocol.Sync
	syncTimes  []time.Time // when each of syncs arrived
	delivered  []*protocol.MsgDeliveredAck
	readMarks  []*protocol.ReadMark
	roomOps    []protocol.Frame
	authHB     int64
	authMid    int64
	goimAuth   bool             // empty AuthReply body, as goim's comet
	ignoreSync bool             // record Syncs, never answer
	maxConvs   int              // conversations per cursor sync reply (0: all)
	forbid     map[string]bool  // conversations whose pulls get STATUS_FORBIDDEN
	maxSeqOver map[string]int64 // max_seq to report instead of the store's
	// unsettled, when set for a conversation, is reported as settled_seq
	// (seqs above it may be in flight); by default everything is settled.
	unsettled map[string]int64
	// alwaysMoreConvs sets more_convs on every cursor sync reply (a broken
	// server).
	alwaysMoreConvs bool
	// syncFn, when set, answers Syncs instead of the fake store (mid is
	// the connection's user).
	syncFn func(mid int64, req *protocol.Sync) *protocol.SyncReply
}

type fakeConn struct {
	srv   *fakeServer
	tcp   net.Conn
	r     *bufio.Reader
	ws    *websocket.Conn
	wmu   sync.Mutex
	mid   int64
	close func()
}

func (fc *fakeConn) read() (protocol.Frame, error) {
	if fc.ws != nil {
		_, data, err := fc.ws.ReadMessage()
		if err != nil {
			return protocol.Frame{}, err
		}
		f, _, err := protocol.Unpack(data, protocol.DefaultMaxBody)
		return f, err
	}
	var hdr [protocol.HeaderLen]byte
	return protocol.ReadFrame(fc.r, &hdr, protocol.DefaultMaxBody, nil)
}

// writeRaw writes bytes as one TCP write or one WebSocket message.
func (fc *fakeConn) writeRaw(b []byte) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if fc.ws != nil {
		return fc.ws.WriteMessage(websocket.BinaryMessage, b)
	}
	_, err := fc.tcp.Write(b)
	return err
}

func (fc *fakeConn) write(op, seq int32, body []byte) error {
	return fc.writeRaw(protocol.AppendFrame(nil, protocol.Version, op, seq, body))
}

func (fc *fakeConn) writeProto(op, seq int32, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return fc.write(op, seq, b)
}

func newFakeServer(t testing.TB, transport string) *fakeServer {
	t.Helper()
	s := &fakeServer{
		t: t, transport: transport, hbAnswer: true,
		conns: map[*fakeConn]struct{}{}, acks: map[string]*protocol.MsgSendAck{},
		counters: map[string]int64{}, store: map[string][]*protocol.Msg{},
		maxSeqOver: map[string]int64{},
		unsettled:  map[string]int64{},
	}
	var tlsCfg *tls.Config
	if transport == TransportTLS || transport == TransportWSS {
		tlsCfg, s.certPool = selfSigned(t)
	}
	switch transport {
	case TransportTCP, TransportTLS:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		s.addr = transport + "://" + ln.Addr().String()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fc := &fakeConn{srv: s, tcp: c, r: bufio.NewReader(c)}
				fc.close = func() { _ = c.Close() }
				wg.Add(1)
				go func() { defer wg.Done(); s.serveConn(fc) }()
			}
		}()
		s.closeFn = func() { _ = ln.Close(); s.kill(); wg.Wait() }
	default:
		up := websocket.Upgrader{}
		var wg sync.WaitGroup
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != DefaultWSPath {
				http.NotFound(w, r)
				return
			}
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			fc := &fakeConn{srv: s, ws: c}
			fc.close = func() { _ = c.Close() }
			wg.Add(1)
			defer wg.Done()
			s.serveConn(fc)
		})
		hs := httptest.NewUnstartedServer(h)
		if tlsCfg != nil {
			hs.TLS = tlsCfg
			hs.StartTLS()
		} else {
			hs.Start()
		}
		s.addr = transport + "://" + hs.Listener.Addr().String()
		s.closeFn = func() { s.kill(); hs.CloseClientConnections(); hs.Close(); wg.Wait() }
	}
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) close() { s.closeFn() }

// kill drops every connection.
func (s *fakeServer) kill() {
	s.mu.Lock()
	conns := make([]*fakeConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

func (s *fakeServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *fakeServer) serveConn(fc *fakeConn) {
	defer fc.close()
	f, err := fc.read()
	if err != nil || f.Op != protocol.OpAuth {
		return
	}
	var ab authBody
	if err := json.Unmarshal(f.Body, &ab); err != nil {
		return
	}
	s.mu.Lock()
	s.auths = append(s.auths, ab)
	if ab.Key == "" {
		s.keyN++
		ab.Key = fmt.Sprintf("dev-%d", s.keyN)
	}
	if ab.Mid == 0 {
		ab.Mid = s.authMid
	}
	fc.mid = ab.Mid
	reply, _ := json.Marshal(authReply{Mid: ab.Mid, Key: ab.Key, RoomID: ab.RoomID, HeartbeatMs: s.authHB})
	s.conns[fc] = struct{}{}
	defer func() {
		s.mu.Lock()
		delete(s.conns, fc)
		s.mu.Unlock()
	}()
	if s.goimAuth {
		reply = nil
	}
	s.mu.Unlock()
	if fc.write(protocol.OpAuthReply, f.Seq, reply) != nil {
		return
	}
	for {
		f, err := fc.read()
		if err != nil {
			return
		}
		if !s.handle(fc, f) {
			return
		}
	}
}

func convID(from int64, m *protocol.MsgSend) string {
	if m.ConvType == protocol.ConvType_CONV_TYPE_GROUP {
		return fmt.Sprintf("g:%d", m.To)
	}
	a, b := min(from, m.To), max(from, m.To)
	return fmt.Sprintf("s:%d:%d", a, b)
}

func (s *fakeServer) handle(fc *fakeConn, f protocol.Frame) bool {
	switch f.Op {
	case protocol.OpHeartbeat:
		s.mu.Lock()
		s.hbCount++
		answer := s.hbAnswer
		s.mu.Unlock()
		if answer {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], 7)
			return fc.write(protocol.OpHeartbeatReply, f.Seq, b[:]) == nil
		}
	case protocol.OpMsgSend:
		var m protocol.MsgSend
		if proto.Unmarshal(f.Body, &m) != nil {
			return false
		}
		s.mu.Lock()
		s.sends = append(s.sends, &m)
		hook := s.onMsgSend
		if s.dropAcks > 0 {
			s.dropAcks--
			s.mu.Unlock()
			return true
		}
		s.mu.Unlock()
		if hook != nil && !hook(fc, &m) {
			return true
		}
		return fc.writeProto(protocol.OpMsgSendAck, f.Seq, s.store1(fc.mid, &m)) == nil
	case protocol.OpSync:
		var req protocol.Sync
		if proto.Unmarshal(f.Body, &req) != nil {
			return false
		}
		s.mu.Lock()
		s.syncs = append(s.syncs, &req)
		s.syncTimes = append(s.syncTimes, time.Now())
		syncFn := s.syncFn
		var reply *protocol.SyncReply
		if syncFn == nil {
			reply = s.syncReplyLocked(&req)
		}
		ignore := s.ignoreSync
		s.mu.Unlock()
		if syncFn != nil {
			reply = syncFn(fc.mid, &req)
		}
		if ignore {
			return true
		}
		return fc.writeProto(protocol.OpSyncReply, f.Seq, reply) == nil
	case protocol.OpMsgDeliveredAck:
		var a protocol.MsgDeliveredAck
		if proto.Unmarshal(f.Body, &a) != nil {
			return false
		}
		s.mu.Lock()
		s.delivered = append(s.delivered, &a)
		s.mu.Unlock()
	case protocol.OpReadMark:
		var rm protocol.ReadMark
		if proto.Unmarshal(f.Body, &rm) != nil {
			return false
		}
		s.mu.Lock()
		s.readMarks = append(s.readMarks, &rm)
		s.mu.Unlock()
		return fc.writeProto(protocol.OpReadMarkReply, f.Seq, &protocol.ReadMarkReply{ConvId: rm.ConvId, ReadSeq: rm.ReadSeq}) == nil
	case protocol.OpChangeRoom, protocol.OpSub, protocol.OpUnsub:
		s.mu.Lock()
		s.roomOps = append(s.roomOps, protocol.Frame{Op: f.Op, Body: slices.Clone(f.Body)})
		s.mu.Unlock()
		return fc.write(f.Op+1, f.Seq, nil) == nil
	default:
		if f.Op >= protocol.OpBusinessMin {
			return fc.write(f.Op, f.Seq, append([]byte("echo:"), f.Body...)) == nil
		}
	}
	return true
}

// store1 stores a MsgSend once per client id and returns its ACK.
func (s *fakeServer) store1(from int64, m *protocol.MsgSend) *protocol.MsgSendAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ack, ok := s.acks[m.ClientMsgId]; ok {
		return ack
	}
	conv := convID(from, m)
	s.counters[conv]++
	seq := s.counters[conv]
	msg := &protocol.Msg{ConvId: conv, Seq: seq, MsgId: seq * 100, Sender: from, ClientMsgId: m.ClientMsgId,
		ContentType: m.ContentType, Payload: m.Payload, ServerTime: time.Now().UnixMilli(), ConvType: m.ConvType, To: m.To}
	s.store[conv] = append(s.store[conv], msg)
	ack := &protocol.MsgSendAck{ClientMsgId: m.ClientMsgId, ConvId: conv, Seq: seq, MsgId: msg.MsgId, ServerTime: msg.ServerTime}
	s.acks[m.ClientMsgId] = ack
	return ack
}

// addMsgs stores messages with the given seqs in conv (a seq not listed is
// a hole: skipped by a counter jump) and returns them.
func (s *fakeServer) addMsgs(conv string, seqs ...int64) []*protocol.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*protocol.Msg
	for _, seq := range seqs {
		m := &protocol.Msg{ConvId: conv, Seq: seq, MsgId: seq * 100, Sender: 99, Payload: fmt.Appendf(nil, "m%d", seq)}
		s.store[conv] = append(s.store[conv], m)
		s.counters[conv] = max(s.counters[conv], seq)
		out = append(out, m)
	}
	slices.SortFunc(s.store[conv], func(a, b *protocol.Msg) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

func (s *fakeServer) maxSeqLocked(conv string) int64 {
	if v, ok := s.maxSeqOver[conv]; ok {
		return v
	}
	return s.counters[conv]
}

func (s *fakeServer) convPageLocked(conv string, from int64, limit int32) *protocol.ConvMessages {
	cm := &protocol.ConvMessages{ConvId: conv, MaxSeq: s.maxSeqLocked(conv)}
	for _, m := range s.store[conv] {
		if m.Seq <= from {
			continue
		}
		if limit > 0 && int32(len(cm.Msgs)) == limit {
			cm.More = true
			break
		}
		cm.Msgs = append(cm.Msgs, m)
	}
	cm.SettledSeq = cm.MaxSeq
	if cm.More {
		cm.SettledSeq = cm.Msgs[len(cm.Msgs)-1].Seq
	}
	if v, ok := s.unsettled[conv]; ok {
		cm.SettledSeq = min(cm.SettledSeq, v)
	}
	return cm
}

func (s *fakeServer) syncReplyLocked(req *protocol.Sync) *protocol.SyncReply {
	r := &protocol.SyncReply{}
	if s.forbid[req.ConvId] {
		return &protocol.SyncReply{Status: protocol.Status_STATUS_FORBIDDEN, Reason: "not a member"}
	}
	if req.ConvId != "" {
		r.Convs = append(r.Convs, s.convPageLocked(req.ConvId, req.FromSeq, req.Limit))
		return r
	}
	cursors := map[string]int64{}
	for _, c := range req.Cursors {
		cursors[c.ConvId] = c.Seq
	}
	convs := make([]string, 0, len(s.counters))
	for conv := range s.counters {
		convs = append(convs, conv)
	}
	// As logic: conversations with a cursor first, then by id.
	slices.SortFunc(convs, func(a, b string) int {
		_, ka := cursors[a]
		_, kb := cursors[b]
		if ka != kb {
			if ka {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, conv := range convs {
		if s.maxSeqLocked(conv) <= cursors[conv] {
			continue
		}
		if _, ok := cursors[conv]; !ok && conv <= req.AfterConvId {
			continue
		}
		if s.maxConvs > 0 && len(r.Convs) == s.maxConvs {
			r.MoreConvs = true
			break
		}
		r.Convs = append(r.Convs, s.convPageLocked(conv, cursors[conv], req.Limit))
	}
	r.MoreConvs = r.MoreConvs || s.alwaysMoreConvs
	return r
}

// pushFrame writes one frame to every connection.
func (s *fakeServer) pushFrame(op int32, body []byte) {
	s.pushRawBytes(protocol.AppendFrame(nil, protocol.Version, op, 0, body))
}

func (s *fakeServer) pushRawBytes(b []byte) {
	s.mu.Lock()
	conns := make([]*fakeConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.writeRaw(b)
	}
}

func (s *fakeServer) pushProto(op int32, m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	s.pushFrame(op, b)
}

func (s *fakeServer) set(fn func(s *fakeServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

func (s *fakeServer) get(fn func(s *fakeServer)) { s.set(fn) }

// selfSigned makes a server TLS config and the pool that trusts it.
func selfSigned(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hubuim-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// testConfig is a Config with millisecond timings for s.
func testConfig(s *fakeServer) Config {
	cfg := Config{
		Addrs:            []string{s.addr},
		Mid:              42,
		Platform:         "test",
		Token:            "tok",
		HeartbeatMin:     time.Second,
		HeartbeatMax:     time.Second,
		HeartbeatStep:    time.Second,
		HeartbeatTimeout: 2 * time.Second,
		BackoffBase:      5 * time.Millisecond,
		BackoffMax:       50 * time.Millisecond,
		SendTimeout:      200 * time.Millisecond,
		AckInterval:      20 * time.Millisecond,
		DialTimeout:      2 * time.Second,
	}
	if s.certPool != nil {
		cfg.TLS = &tls.Config{RootCAs: s.certPool}
	}
	return cfg
}

// eventRecorder drains a client's events into a list the test can poll.
type eventRecorder struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func record(c *Client) *eventRecorder {
	r := &eventRecorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *eventRecorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func eventsOf[T Event](r *eventRecorder) []T {
	var out []T
	for _, ev := range r.snapshot() {
		if e, ok := ev.(T); ok {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, 10*time.Second, what, cond)
}

// startClient connects a client to cfg and closes it at the end of the test.
func startClient(t testing.TB, cfg Config) (*Client, *eventRecorder) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := record(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return c, r
}

func msgSeqs(r *eventRecorder, conv string) []int64 {
	var seqs []int64
	for _, m := range eventsOf[Message](r) {
		if m.ConvId == conv {
			seqs = append(seqs, m.Seq)
		}
	}
	return seqs
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// trickle writes b to every TCP connection chunk bytes at a time.
func (s *fakeServer) trickle(b []byte, chunk int, every time.Duration) {
	s.mu.Lock()
	conns := make([]*fakeConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for len(b) > 0 {
		n := min(chunk, len(b))
		for _, c := range conns {
			_ = c.writeRaw(b[:n])
		}
		b = b[n:]
		time.Sleep(every)
	}
}
