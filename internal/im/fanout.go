package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of FanoutConfig.
const (
	// DefaultFullPushMaxMembers is the largest group whose members get the
	// full message; larger groups get MsgNotify and pull.
	DefaultFullPushMaxMembers = 500
	// DefaultBurstPerSecond is how many messages per second one group
	// conversation may push in full before its members get MsgNotify.
	DefaultBurstPerSecond = 50
	// DefaultPreviewBytes bounds the payload preview in notifications.
	DefaultPreviewBytes = 64
	burstWindow         = time.Second
	// burstSweepEvery bounds the burst table: it is cleared of idle
	// conversations once per this many windows.
	burstSweepEvery = 60
)

// DeviceLookup finds the online devices of users.
type DeviceLookup interface {
	Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error)
}

// MemberLister lists the members of a group.
type MemberLister interface {
	Members(ctx context.Context, groupID int64) ([]int64, error)
}

// Dispatcher hands a push to the comets (job's comet clients). It returns
// once the push is queued, not delivered.
type Dispatcher interface {
	Dispatch(ctx context.Context, p *logicpb.PushMsg) error
}

// FanoutConfig configures the fan-out. The zero value is the default.
type FanoutConfig struct {
	// FullPushMaxMembers: groups up to this size get full messages.
	// Default DefaultFullPushMaxMembers.
	FullPushMaxMembers int `yaml:"full_push_max_members"`
	// BurstPerSecond: group messages per second pushed in full before the
	// rest of the second is sent as MsgNotify. Default DefaultBurstPerSecond.
	BurstPerSecond int `yaml:"burst_per_second"`
	// PreviewBytes bounds the notification preview. Default DefaultPreviewBytes.
	PreviewBytes int `yaml:"preview_bytes"`
}

// FanoutDeps are the fan-out's collaborators. Notifier may be nil (no
// offline notifications).
type FanoutDeps struct {
	Devices    DeviceLookup
	Members    MemberLister
	Dispatcher Dispatcher
	Notifier   Notifier
	Logger     *slog.Logger
	Now        func() time.Time
}

// Fanout consumes MsgEvents (the message topic) and pushes them to every
// online device of every recipient, except the device they came from.
type Fanout struct {
	cfg  FanoutConfig
	deps FanoutDeps

	mu        sync.Mutex
	burst     map[string]*burstCount
	lastSweep time.Time
}

type burstCount struct {
	window time.Time
	n      int
}

// NewFanout validates its dependencies.
func NewFanout(cfg FanoutConfig, deps FanoutDeps) (*Fanout, error) {
	if deps.Devices == nil || deps.Members == nil || deps.Dispatcher == nil {
		return nil, errors.New("im: fanout needs devices, members and a dispatcher")
	}
	if cfg.FullPushMaxMembers <= 0 {
		cfg.FullPushMaxMembers = DefaultFullPushMaxMembers
	}
	if cfg.BurstPerSecond <= 0 {
		cfg.BurstPerSecond = DefaultBurstPerSecond
	}
	if cfg.PreviewBytes <= 0 {
		cfg.PreviewBytes = DefaultPreviewBytes
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	deps.Devices = &deviceCoalescer{next: deps.Devices}
	return &Fanout{cfg: cfg, deps: deps, burst: make(map[string]*burstCount)}, nil
}

// Handle is an mq.Handler for the message topic. A malformed record is
// logged and skipped (redelivering it cannot help); a failed lookup or
// dispatch returns the error so the record is delivered again.
func (f *Fanout) Handle(ctx context.Context, m *mq.Message) error {
	ev := &logicpb.MsgEvent{}
	if err := proto.Unmarshal(m.Value, ev); err != nil {
		f.deps.Logger.Warn("im: skip malformed message event", "partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	switch ev.Kind {
	case logicpb.MsgEvent_MESSAGE:
		if ev.Msg == nil {
			return nil
		}
		return f.message(ctx, ev)
	case logicpb.MsgEvent_READ_MARK:
		if ev.ReadMark == nil {
			return nil
		}
		body, err := proto.Marshal(ev.ReadMark)
		if err != nil {
			return err
		}
		_, err = f.push(ctx, ev.Users, ev.OriginKey, protocol.OpReadMark, body)
		return err
	case logicpb.MsgEvent_PRESENCE:
		if ev.Presence == nil {
			return nil
		}
		body, err := proto.Marshal(ev.Presence)
		if err != nil {
			return err
		}
		_, err = f.push(ctx, ev.Users, "", protocol.OpPresenceEvent, body)
		return err
	default:
		return nil
	}
}

func (f *Fanout) message(ctx context.Context, ev *logicpb.MsgEvent) error {
	msg := ev.Msg
	users := ev.Users
	op := protocol.OpMsgPush
	var body []byte
	if msg.ConvType == protocol.ConvType_CONV_TYPE_GROUP {
		members, err := f.deps.Members.Members(ctx, msg.To)
		if errors.Is(err, store.ErrNotFound) {
			return nil // the group was deleted after the message
		}
		if err != nil {
			return fmt.Errorf("im: fanout members: %w", err)
		}
		users = members
		if len(members) > f.cfg.FullPushMaxMembers || f.overBurst(msg.ConvId) {
			op = protocol.OpMsgNotify
			b, err := proto.Marshal(&protocol.MsgNotify{ConvId: msg.ConvId, MaxSeq: msg.Seq})
			if err != nil {
				return err
			}
			body = b
		}
	}
	if body == nil {
		b, err := proto.Marshal(msg)
		if err != nil {
			return err
		}
		body = b
	}
	offline, err := f.push(ctx, users, ev.OriginKey, op, body)
	if err != nil {
		return err
	}
	if f.deps.Notifier == nil || len(offline) == 0 {
		return nil
	}
	notes := make([]*Notification, 0, len(offline))
	preview := msg.Payload[:min(len(msg.Payload), f.cfg.PreviewBytes)]
	for _, u := range offline {
		if u == msg.Sender {
			continue
		}
		notes = append(notes, &Notification{User: u, ConvID: msg.ConvId, Seq: msg.Seq, MsgID: msg.MsgId, Sender: msg.Sender, ContentType: msg.ContentType, Preview: preview})
	}
	if len(notes) == 0 {
		return nil
	}
	if err := f.deps.Notifier.Notify(ctx, notes); err != nil {
		// Notifications are best effort: the message is stored and will
		// be synced; redelivering the event would push it twice.
		f.deps.Logger.Warn("im: offline notification failed", "conv", msg.ConvId, "users", len(notes), "err", err)
	}
	return nil
}

// push sends op/body to every online device of users except originKey,
// one PushMsg per comet, and returns the users with no online device.
func (f *Fanout) push(ctx context.Context, users []int64, originKey string, op int32, body []byte) ([]int64, error) {
	if len(users) == 0 {
		return nil, nil
	}
	devices, err := f.deps.Devices.Devices(ctx, users)
	if err != nil {
		return nil, fmt.Errorf("im: fanout devices: %w", err)
	}
	byServer := make(map[string][]string)
	var offline []int64
	for _, u := range users {
		ds := devices[u]
		if len(ds) == 0 {
			offline = append(offline, u)
			continue
		}
		for _, d := range ds {
			if d.Key != originKey {
				byServer[d.Server] = append(byServer[d.Server], d.Key)
			}
		}
	}
	for server, keys := range byServer {
		p := &logicpb.PushMsg{Type: logicpb.PushMsg_PUSH, Operation: op, Server: server, Keys: keys, Msg: body}
		if err := f.deps.Dispatcher.Dispatch(ctx, p); err != nil {
			return nil, fmt.Errorf("im: fanout dispatch to %s: %w", server, err)
		}
	}
	return offline, nil
}

// overBurst counts a group message and reports whether its conversation
// went over the per-second full-push budget.
func (f *Fanout) overBurst(convID string) bool {
	now := f.deps.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.lastSweep) > burstSweepEvery*burstWindow {
		for k, b := range f.burst {
			if now.Sub(b.window) > burstWindow {
				delete(f.burst, k)
			}
		}
		f.lastSweep = now
	}
	b := f.burst[convID]
	if b == nil {
		b = &burstCount{window: now}
		f.burst[convID] = b
	}
	if now.Sub(b.window) > burstWindow {
		b.window, b.n = now, 0
	}
	b.n++
	return b.n > f.cfg.BurstPerSecond
}
