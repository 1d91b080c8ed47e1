package im

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

type fakeDevices map[int64][]session.Device

func (f fakeDevices) Devices(_ context.Context, mids []int64) (map[int64][]session.Device, error) {
	out := map[int64][]session.Device{}
	for _, m := range mids {
		if d, ok := f[m]; ok {
			out[m] = d
		}
	}
	return out, nil
}

type fakeMembers map[int64][]int64

func (f fakeMembers) Members(_ context.Context, g int64) ([]int64, error) {
	m, ok := f[g]
	if !ok {
		return nil, store.ErrNotFound
	}
	return m, nil
}

type recordingDispatcher struct {
	mu     sync.Mutex
	pushes []*logicpb.PushMsg
	err    error
}

func (d *recordingDispatcher) Dispatch(_ context.Context, p *logicpb.PushMsg) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	d.pushes = append(d.pushes, p)
	return nil
}

// byServer returns server -> sorted keys, and the single op used.
func (d *recordingDispatcher) byServer(t *testing.T) (map[string]string, int32) {
	t.Helper()
	out := map[string]string{}
	var op int32
	for _, p := range d.pushes {
		keys := append([]string(nil), p.Keys...)
		sort.Strings(keys)
		out[p.Server] = strings.Join(keys, ",")
		if op != 0 && p.Operation != op {
			t.Fatalf("mixed ops %d and %d", op, p.Operation)
		}
		op = p.Operation
	}
	return out, op
}

type recordingNotifier struct{ notes []*Notification }

func (n *recordingNotifier) Notify(_ context.Context, notes []*Notification) error {
	n.notes = append(n.notes, notes...)
	return nil
}

func msgEvent(tb testing.TB, ev *logicpb.MsgEvent) *mq.Message {
	tb.Helper()
	v, err := proto.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	return &mq.Message{Topic: mq.TopicMessage, Value: v}
}

var devices = fakeDevices{
	1: {{Key: "a-phone", Server: "c1"}, {Key: "a-web", Server: "c2"}},
	2: {{Key: "b-phone", Server: "c2"}},
	3: {{Key: "c-phone", Server: "c1"}},
}

func newFanout(t *testing.T, cfg FanoutConfig, members fakeMembers) (*Fanout, *recordingDispatcher, *recordingNotifier) {
	t.Helper()
	d := &recordingDispatcher{}
	n := &recordingNotifier{}
	f, err := NewFanout(cfg, FanoutDeps{Devices: devices, Members: members, Dispatcher: d, Notifier: n})
	if err != nil {
		t.Fatal(err)
	}
	return f, d, n
}

func TestFanoutSingleSkipsOriginDevice(t *testing.T) {
	f, d, n := newFanout(t, FanoutConfig{}, nil)
	msg := &protocol.Msg{ConvId: store.SingleConvID(1, 2), Seq: 4, Sender: 1, ConvType: protocol.ConvType_CONV_TYPE_SINGLE, To: 2, Payload: []byte("x")}
	if err := f.Handle(context.Background(), msgEvent(t, &logicpb.MsgEvent{Msg: msg, OriginKey: "a-phone", Users: []int64{1, 2}})); err != nil {
		t.Fatal(err)
	}
	got, op := d.byServer(t)
	if op != protocol.OpMsgPush || got["c2"] != "a-web,b-phone" || len(got) != 1 {
		t.Fatalf("pushes %v op %d; want c2: a-web,b-phone op 22", got, op)
	}
	pushed := &protocol.Msg{}
	if err := proto.Unmarshal(d.pushes[0].Msg, pushed); err != nil || !proto.Equal(pushed, msg) {
		t.Fatalf("pushed body %v (%v), want %v", pushed, err, msg)
	}
	if len(n.notes) != 0 {
		t.Fatalf("notified online users: %v", n.notes)
	}
}

func TestFanoutGroupNotifiesOfflineOnly(t *testing.T) {
	f, d, n := newFanout(t, FanoutConfig{PreviewBytes: 3}, fakeMembers{7: {1, 2, 3, 4, 5}})
	msg := &protocol.Msg{ConvId: store.GroupConvID(7), Seq: 9, MsgId: 99, Sender: 1, ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: 7, Payload: []byte("hello")}
	if err := f.Handle(context.Background(), msgEvent(t, &logicpb.MsgEvent{Msg: msg, OriginKey: "a-phone"})); err != nil {
		t.Fatal(err)
	}
	got, op := d.byServer(t)
	if op != protocol.OpMsgPush || got["c1"] != "c-phone" || got["c2"] != "a-web,b-phone" {
		t.Fatalf("pushes %v op %d", got, op)
	}
	var users []int64
	for _, note := range n.notes {
		users = append(users, note.User)
		if note.Seq != 9 || note.MsgID != 99 || string(note.Preview) != "hel" {
			t.Fatalf("notification %+v", note)
		}
	}
	if len(users) != 2 || users[0] != 4 || users[1] != 5 {
		t.Fatalf("notified %v, want [4 5]", users)
	}
}

func TestFanoutLargeGroupAndBurstGetNotify(t *testing.T) {
	members := fakeMembers{1: {1, 2, 3}, 2: {1, 2, 3}}
	now := time.Unix(100, 0)
	d := &recordingDispatcher{}
	f, err := NewFanout(FanoutConfig{FullPushMaxMembers: 2, BurstPerSecond: 2}, FanoutDeps{Devices: devices, Members: members, Dispatcher: d, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(g, seq int64) *mq.Message {
		return msgEvent(t, &logicpb.MsgEvent{Msg: &protocol.Msg{ConvId: store.GroupConvID(g), Seq: seq, Sender: 1, ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: g}})
	}
	f.Handle(context.Background(), ev(1, 5))
	if _, op := d.byServer(t); op != protocol.OpMsgNotify {
		t.Fatalf("group over the size limit got op %d, want notify", op)
	}
	notify := &protocol.MsgNotify{}
	proto.Unmarshal(d.pushes[0].Msg, notify)
	if notify.ConvId != store.GroupConvID(1) || notify.MaxSeq != 5 {
		t.Fatalf("notify = %v", notify)
	}

	f.cfg.FullPushMaxMembers = 10
	var ops []int32
	for seq := int64(1); seq <= 4; seq++ {
		d.pushes = nil
		f.Handle(context.Background(), ev(2, seq))
		ops = append(ops, d.pushes[0].Operation)
	}
	want := []int32{protocol.OpMsgPush, protocol.OpMsgPush, protocol.OpMsgNotify, protocol.OpMsgNotify}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("burst ops = %v, want %v", ops, want)
		}
	}
	now = now.Add(2 * time.Second)
	d.pushes = nil
	f.Handle(context.Background(), ev(2, 5))
	if d.pushes[0].Operation != protocol.OpMsgPush {
		t.Fatal("burst budget did not reset after the window")
	}
}

func TestFanoutReadMarkRelay(t *testing.T) {
	f, d, _ := newFanout(t, FanoutConfig{}, nil)
	ev := &logicpb.MsgEvent{Kind: logicpb.MsgEvent_READ_MARK, OriginKey: "a-web", Users: []int64{1, 3},
		ReadMark: &protocol.ReadMark{ConvId: store.SingleConvID(1, 3), ReadSeq: 3, User: 1}}
	if err := f.Handle(context.Background(), msgEvent(t, ev)); err != nil {
		t.Fatal(err)
	}
	got, op := d.byServer(t)
	if op != protocol.OpReadMark || got["c1"] != "a-phone,c-phone" || len(got) != 1 {
		t.Fatalf("read mark relay %v op %d", got, op)
	}
}

func TestFanoutErrors(t *testing.T) {
	f, d, _ := newFanout(t, FanoutConfig{}, fakeMembers{})
	if err := f.Handle(context.Background(), &mq.Message{Value: []byte{0xff, 0x01}}); err != nil {
		t.Fatalf("malformed record should be skipped, got %v", err)
	}
	gone := &logicpb.MsgEvent{Msg: &protocol.Msg{ConvId: store.GroupConvID(5), Seq: 1, ConvType: protocol.ConvType_CONV_TYPE_GROUP, To: 5}}
	if err := f.Handle(context.Background(), msgEvent(t, gone)); err != nil {
		t.Fatalf("deleted group should be skipped, got %v", err)
	}
	d.err = errors.New("queue closed")
	ev := &logicpb.MsgEvent{Msg: &protocol.Msg{ConvId: store.SingleConvID(1, 2), Seq: 1, Sender: 1}, Users: []int64{1, 2}}
	if err := f.Handle(context.Background(), msgEvent(t, ev)); err == nil {
		t.Fatal("dispatch failure must be returned so the record is redelivered")
	}
}

func TestWebhookNotifier(t *testing.T) {
	var got struct{ Notifications []*Notification }
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(status)
	}))
	defer srv.Close()
	w, err := NewWebhookNotifier(srv.URL, "s3", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	notes := []*Notification{{User: 5, ConvID: "s:1:5", Seq: 2, Preview: []byte("hi")}}
	if err := w.Notify(context.Background(), notes); err != nil {
		t.Fatal(err)
	}
	if len(got.Notifications) != 1 || got.Notifications[0].User != 5 || string(got.Notifications[0].Preview) != "hi" {
		t.Fatalf("webhook got %+v", got)
	}
	status = http.StatusInternalServerError
	if err := w.Notify(context.Background(), notes); err == nil {
		t.Fatal("500 not reported")
	}
	srv.Close()
	if err := w.Notify(context.Background(), notes); err == nil {
		t.Fatal("down webhook not reported")
	}
	if _, err := NewWebhookNotifier("", "", 0); err == nil {
		t.Fatal("empty url accepted")
	}
}

type rawProducer struct {
	keys, values []string
}

func (p *rawProducer) Publish(_ context.Context, _ string, k, v []byte) error {
	p.keys = append(p.keys, string(k))
	p.values = append(p.values, string(v))
	return nil
}
func (p *rawProducer) Close() error { return nil }

func TestTopicNotifier(t *testing.T) {
	p := &rawProducer{}
	n, err := NewTopicNotifier(p, "hubuim-notify")
	if err != nil {
		t.Fatal(err)
	}
	if err := (MultiNotifier{n}).Notify(context.Background(), []*Notification{{User: 42, ConvID: "g:1", Seq: 3}}); err != nil {
		t.Fatal(err)
	}
	var got Notification
	if len(p.keys) != 1 || p.keys[0] != "42" || json.Unmarshal([]byte(p.values[0]), &got) != nil || got.ConvID != "g:1" {
		t.Fatalf("published %v %v", p.keys, p.values)
	}
}

// failingDispatcher fails its failAt-th Dispatch call (1-based) once.
type failingDispatcher struct {
	recordingDispatcher
	calls, failAt int
}

func (d *failingDispatcher) Dispatch(ctx context.Context, p *logicpb.PushMsg) error {
	d.mu.Lock()
	d.calls++
	fail := d.calls == d.failAt
	d.mu.Unlock()
	if fail {
		return errors.New("comet queue closed")
	}
	return d.recordingDispatcher.Dispatch(ctx, p)
}

// A batch whose second record fails to dispatch is retried from that
// record on: the first record's offline user is notified once, not on
// every retry (found by review).
func TestFanoutRetryNotifiesOnce(t *testing.T) {
	d := &failingDispatcher{failAt: 2}
	n := &recordingNotifier{}
	f, err := NewFanout(FanoutConfig{}, FanoutDeps{Devices: devices, Members: fakeMembers{}, Dispatcher: d, Notifier: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	single := func(from, to int64, origin string, seq int64) fanItem {
		return fanItem{ctx: ctx, ev: &logicpb.MsgEvent{Kind: logicpb.MsgEvent_MESSAGE, Users: []int64{from, to}, OriginKey: origin,
			Msg: &protocol.Msg{ConvId: store.SingleConvID(from, to), ConvType: protocol.ConvType_CONV_TYPE_SINGLE, Seq: seq, Sender: from, To: to}}}
	}
	// 1 → 9 (offline): one push to 1's other device, a notification for 9;
	// 3 → 1: pushes to both of 1's devices, the first of which fails once.
	f.fanOutRetrying([]fanItem{single(1, 9, "a-phone", 1), single(3, 1, "c-phone", 1)})
	if len(n.notes) != 1 || n.notes[0].User != 9 {
		t.Fatalf("notifications %v, want one for user 9", n.notes)
	}
	if d.calls != 4 {
		t.Fatalf("%d dispatches, want 4 (the first record is not pushed again)", d.calls)
	}
}
