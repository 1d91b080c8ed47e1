package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of Config.
const (
	// DefaultMaxPayload leaves room for the MsgSend envelope inside the
	// default 16 KiB frame body.
	DefaultMaxPayload = protocol.DefaultMaxBody - 1024
	// DefaultSyncLimit is the page size of a Sync without a limit.
	DefaultSyncLimit = 100
	// DefaultCursorSyncLimit is the page size per conversation of a
	// cursor sync (reconnect); the client pulls the rest by conversation.
	DefaultCursorSyncLimit = 20
	// DefaultMaxSyncConvs bounds the conversations of one cursor sync reply.
	DefaultMaxSyncConvs = 200
	// seqConflictRetries is how often Send retries with a fresh seq after a
	// seq conflict (a counter behind the store handed out a used seq).
	seqConflictRetries = 3
	// claimAbortTimeout bounds the release of a dedup claim after a failed
	// store, which runs even when the caller's ctx has ended.
	claimAbortTimeout = time.Second
	// republishWindow is how recent a message a resend finds already
	// stored must be to be published again (its first attempt may have
	// failed after the store, before publishing).
	republishWindow = time.Minute
	// DefaultSettleTime bounds the time from a seq's allocation to the end
	// of its store attempt, plus clock skew between logic replicas. A
	// stored message older than that proves every lower seq is stored or
	// will never be (SyncReply's settled_seq).
	DefaultSettleTime = 10 * time.Second
	// DefaultSyncMaxBytes bounds the messages' payloads in one sync reply;
	// the rest is left for the next page ("more").
	DefaultSyncMaxBytes = 256 << 10
	// maxTouchedPerMsg is the most users one sent message touches (1:1).
	maxTouchedPerMsg = 2
	// storeShare is the part of the settle time one store attempt may use
	// (1/storeShare); the rest is margin for a commit that overruns its
	// deadline under load (it cannot always be cancelled once sent) and for
	// clock skew between replicas.
	storeShare = 3
)

// Store is what the IM service needs from the message store.
type Store interface {
	store.MessageStore
	store.ConvIndex
	store.SyncPager
	IsMember(ctx context.Context, groupID, userID int64) (bool, error)
	Group(ctx context.Context, groupID int64) (store.Group, error)
	Groups(ctx context.Context, userID int64) ([]store.Group, error)
	Members(ctx context.Context, groupID int64) ([]int64, error)
}

// IDGen issues unique, time-ordered message ids.
type IDGen interface {
	Next() (int64, error)
}

// Config configures the IM service. The zero value is the default.
type Config struct {
	// MaxPayload bounds MsgSend.payload in bytes. Default DefaultMaxPayload.
	MaxPayload int `yaml:"max_payload"`
	// SyncLimit is the default and maximum page of a conversation sync.
	// Default DefaultSyncLimit; capped at store.MaxRangeLimit.
	SyncLimit int `yaml:"sync_limit"`
	// RelayGroupReadMarks relays a member's read mark to every member of
	// the group (off by default: large groups would flood).
	RelayGroupReadMarks bool `yaml:"relay_group_read_marks"`
	// MessageTopic is the topic stored messages are published to. Default
	// mq.TopicMessage.
	MessageTopic string `yaml:"message_topic"`
	// SettleTime bounds seq allocation to stored message (a store attempt
	// gets a third of it) plus overrun and clock skew; see DefaultSettleTime.
	SettleTime time.Duration `yaml:"settle_time"`
	// SyncMaxBytes bounds the payload bytes of one sync reply. Default
	// DefaultSyncMaxBytes.
	SyncMaxBytes int `yaml:"sync_max_bytes"`
	// AppendWindow is how long a group commit of sent messages waits for
	// more messages before it starts. Default 0: no wait (concurrent sends
	// queue up behind the commits in flight and go in the next one).
	AppendWindow time.Duration `yaml:"append_window"`
	// AppendMaxBatch bounds the messages of one group commit. Default
	// DefaultAppendMaxBatch; capped at store.MaxBatch/2 (1:1 messages touch
	// two users each).
	AppendMaxBatch int `yaml:"append_max_batch"`
	// AppendConcurrency bounds the group commits in flight (keep it below
	// the store's connection pool). Default DefaultAppendConcurrency.
	AppendConcurrency int `yaml:"append_concurrency"`
	// ClaimPipelines bounds the Redis pipelines of send claims (dedup claim
	// and seq allocation, one script per send) and dedup finishes in
	// flight; concurrent sends share the next pipeline. Default
	// DefaultClaimPipelines. Used when the dedup store and the seq counter
	// are a RedisDedup and a RedisSeqCounter on the same client.
	ClaimPipelines int `yaml:"claim_pipelines"`
	// MemberCache caches group member lists for the membership check of
	// group sends and syncs (ttl default 2s, negative: off, every check
	// queries the store; max_groups default 10000; max_members default
	// 1048576). A change made through this logic takes effect at once; a
	// member removed through another logic replica may still send to and
	// sync the group here for up to ttl. An added member is never refused:
	// a member missing from the cached list is checked in the store.
	MemberCache members.Config `yaml:"member_cache"`
}

// Deps are the IM service's collaborators.
type Deps struct {
	Seq      *SeqAllocator
	Dedup    DedupStore
	Store    Store
	IDs      IDGen
	Producer mq.Producer
	Metrics  *Metrics // nil: not measured
	Logger   *slog.Logger
	Now      func() time.Time // default time.Now
	// MemberEvents, if set, tells the other processes (logic replicas,
	// jobs) of every membership change made here, so that their member
	// caches drop the group at once (members.RedisEvents).
	MemberEvents MemberEventPublisher
}

// MemberEventPublisher publishes "the members of a group changed".
type MemberEventPublisher interface {
	Publish(ctx context.Context, groupID int64) error
}

// memberEventTimeout bounds the publication of a membership change; when it
// fails, the other processes see the change within their cache TTL.
const memberEventTimeout = time.Second

// Service implements the IM operations logic serves to clients.
type Service struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	app    *appender
	claims sendClaimer
	events *eventPublisher
	// members caches member lists for checkMember; nil when
	// cfg.MemberCache disables it.
	members *members.Cache
}

// NewService validates cfg and deps.
func NewService(cfg Config, deps Deps) (*Service, error) {
	switch {
	case deps.Seq == nil:
		return nil, errors.New("im: service needs a seq allocator")
	case deps.Dedup == nil:
		return nil, errors.New("im: service needs a dedup store")
	case deps.Store == nil:
		return nil, errors.New("im: service needs a message store")
	case deps.IDs == nil:
		return nil, errors.New("im: service needs an id generator")
	case deps.Producer == nil:
		return nil, errors.New("im: service needs a producer")
	}
	if cfg.MaxPayload < 0 || cfg.SyncLimit < 0 || cfg.SettleTime < 0 || cfg.SyncMaxBytes < 0 ||
		cfg.AppendWindow < 0 || cfg.AppendMaxBatch < 0 || cfg.AppendConcurrency < 0 || cfg.ClaimPipelines < 0 {
		return nil, errors.New("im: max_payload, sync_limit, settle_time, sync_max_bytes, append_window, append_max_batch, append_concurrency and claim_pipelines must not be negative")
	}
	if err := cfg.MemberCache.Validate("member_cache."); err != nil {
		return nil, err
	}
	var memberCache *members.Cache
	if cfg.MemberCache.Enabled() {
		var err error
		if memberCache, err = members.New(cfg.MemberCache, deps.Store, deps.Metrics.memberCacheMetrics()); err != nil {
			return nil, err
		}
		cfg.MemberCache = memberCache.Config()
	}
	if cfg.ClaimPipelines == 0 {
		cfg.ClaimPipelines = DefaultClaimPipelines
	}
	if cfg.AppendMaxBatch == 0 {
		cfg.AppendMaxBatch = DefaultAppendMaxBatch
	}
	cfg.AppendMaxBatch = min(cfg.AppendMaxBatch, store.MaxBatch/maxTouchedPerMsg)
	if cfg.AppendConcurrency == 0 {
		cfg.AppendConcurrency = DefaultAppendConcurrency
	}
	if cfg.SettleTime == 0 {
		cfg.SettleTime = DefaultSettleTime
	}
	if cfg.AppendWindow >= cfg.SettleTime/storeShare {
		return nil, errors.New("im: append_window must be below a third of settle_time")
	}
	if cfg.SyncMaxBytes == 0 {
		cfg.SyncMaxBytes = DefaultSyncMaxBytes
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.SyncLimit == 0 {
		cfg.SyncLimit = DefaultSyncLimit
	}
	cfg.SyncLimit = min(cfg.SyncLimit, store.MaxRangeLimit)
	if cfg.MessageTopic == "" {
		cfg.MessageTopic = mq.TopicMessage
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	app := newAppender(deps.Store, cfg.AppendWindow, cfg.AppendMaxBatch, cfg.AppendConcurrency, deps.Metrics)
	claims := newSendClaimer(deps.Dedup, deps.Seq, cfg.ClaimPipelines, claimMaxBatch, deps.Logger)
	return &Service{cfg: cfg, deps: deps, log: deps.Logger, app: app, claims: claims,
		events: newEventPublisher(deps.Producer, cfg.MessageTopic, maxEventsInFlight, deps.Metrics, deps.Logger), members: memberCache}, nil
}

// statusError is a client-visible failure of an IM operation.
type statusError struct {
	status protocol.Status
	reason string
}

func (e *statusError) Error() string { return fmt.Sprintf("%s: %s", e.status, e.reason) }

func errStatus(st protocol.Status, reason string) error {
	return &statusError{status: st, reason: reason}
}

// statusOf maps err to the status and reason a client sees. Internal errors
// are logged here and reported without detail.
func (s *Service) statusOf(op string, err error) (protocol.Status, string) {
	var se *statusError
	if errors.As(err, &se) {
		return se.status, se.reason
	}
	if errors.Is(err, store.ErrInvalid) {
		// Input the checks before the store let through: retrying it
		// cannot help, so not INTERNAL.
		s.log.Warn("im operation refused by the store", "op", op, "err", err)
		return protocol.Status_STATUS_BAD_REQUEST, "invalid request"
	}
	s.log.Warn("im operation failed", "op", op, "err", err)
	return protocol.Status_STATUS_INTERNAL, "internal error, retry"
}

// Send stores an upstream message and returns its ACK. The ACK has a
// non-OK status, and nothing is stored, when the request is refused or a
// dependency failed; the client may resend the same client message id.
func (s *Service) Send(ctx context.Context, sender int64, originKey string, req *protocol.MsgSend) *protocol.MsgSendAck {
	start := s.deps.Now()
	ack, err := s.send(ctx, sender, originKey, req)
	if err != nil {
		st, reason := s.statusOf("send", err)
		ack = &protocol.MsgSendAck{ClientMsgId: req.GetClientMsgId(), Status: st, Reason: reason}
	}
	s.deps.Metrics.observeSend(ack.Status, s.deps.Now().Sub(start))
	return ack
}

func (s *Service) send(ctx context.Context, sender int64, originKey string, req *protocol.MsgSend) (*protocol.MsgSendAck, error) {
	convID, users, err := s.checkSend(ctx, sender, req)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	claim, err := s.claims.claimNext(ctx, sender, req.ClientMsgId, convID)
	if err != nil {
		return nil, err
	}
	s.deps.Metrics.observePhase(phaseDedup, t)
	switch claim.state {
	case DedupDone:
		ack := &protocol.MsgSendAck{}
		if err := proto.Unmarshal(claim.ack, ack); err != nil {
			return nil, fmt.Errorf("dedup: stored ack: %w", err)
		}
		s.deps.Metrics.dup()
		return ack, nil
	case DedupInFlight:
		return nil, errStatus(protocol.Status_STATUS_UNAVAILABLE, "the same client_msg_id is being processed, retry")
	}
	stored, dup, err := s.store(ctx, sender, convID, users, req, claim.seq)
	if err != nil {
		// Not with ctx: a store that failed because the caller gave up
		// would leave the claim held, and the resend refused as in flight,
		// until the claim expires.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimAbortTimeout)
		aerr := s.claims.abort(actx, sender, req.ClientMsgId, convID)
		cancel()
		if aerr != nil {
			s.log.Warn("im: release dedup claim", "err", aerr)
		}
		return nil, err
	}
	ack := &protocol.MsgSendAck{
		ClientMsgId: req.ClientMsgId,
		ConvId:      stored.ConvId,
		Seq:         stored.Seq,
		MsgId:       stored.MsgId,
		ServerTime:  stored.ServerTime,
	}
	t = time.Now()
	if raw, err := proto.Marshal(ack); err == nil {
		s.claims.finish(ctx, sender, req.ClientMsgId, convID, raw)
	}
	t = s.deps.Metrics.observePhase(phaseFinish, t)
	if dup {
		s.deps.Metrics.dup()
		// Stored by an earlier attempt. One whose outcome was lost (its
		// commit reported an error) may never have published it: a recent
		// message is published again (devices drop a seq they hold). An
		// old one — a resend after the dedup window, or after Redis lost
		// the entry — was published when it was stored; again would only
		// repeat its offline notifications.
		if s.deps.Now().UnixMilli()-stored.ServerTime > republishWindow.Milliseconds() {
			return ack, nil
		}
	}
	s.publish(ctx, &logicpb.MsgEvent{Kind: logicpb.MsgEvent_MESSAGE, Msg: stored, OriginKey: originKey, Users: users})
	s.deps.Metrics.observePhase(phasePublish, t)
	return ack, nil
}

// checkSend validates req and returns the conversation id and, for 1:1,
// the two users.
func (s *Service) checkSend(ctx context.Context, sender int64, req *protocol.MsgSend) (string, []int64, error) {
	switch {
	case req.GetClientMsgId() == "":
		return "", nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "client_msg_id is required")
	case !store.ValidClientMsgID(req.ClientMsgId):
		return "", nil, errStatus(protocol.Status_STATUS_BAD_REQUEST,
			fmt.Sprintf("client_msg_id must be valid UTF-8 without NUL, at most %d bytes", store.MaxClientMsgIDLen))
	case len(req.Payload) > s.cfg.MaxPayload:
		return "", nil, errStatus(protocol.Status_STATUS_TOO_LARGE, fmt.Sprintf("payload over %d bytes", s.cfg.MaxPayload))
	case req.To <= 0:
		return "", nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "to must be a positive user or group id")
	}
	switch req.ConvType {
	case protocol.ConvType_CONV_TYPE_SINGLE:
		if req.To == sender {
			return "", nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "cannot send to yourself")
		}
		return store.SingleConvID(sender, req.To), []int64{sender, req.To}, nil
	case protocol.ConvType_CONV_TYPE_GROUP:
		if err := s.checkMember(ctx, req.To, sender); err != nil {
			return "", nil, err
		}
		return store.GroupConvID(req.To), nil, nil
	default:
		return "", nil, errStatus(protocol.Status_STATUS_BAD_REQUEST, "unknown conv_type")
	}
}

func (s *Service) checkMember(ctx context.Context, groupID, user int64) error {
	if s.members != nil {
		ok, err := s.members.IsMember(ctx, groupID, user)
		switch {
		case ok:
			return nil
		case errors.Is(err, store.ErrNotFound): // a fresh load: not-found is never cached
			return errStatus(protocol.Status_STATUS_NOT_FOUND, "no such group")
		case err != nil:
			return fmt.Errorf("membership: %w", err)
		}
		// Not in the cached list: the store decides, so a member added
		// through another logic replica is never refused.
	}
	ok, err := s.deps.Store.IsMember(ctx, groupID, user)
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	if ok {
		s.groupChanged(groupID) // the cached list is behind
		return nil
	}
	if _, err := s.deps.Store.Group(ctx, groupID); errors.Is(err, store.ErrNotFound) {
		return errStatus(protocol.Status_STATUS_NOT_FOUND, "no such group")
	} else if err != nil {
		return fmt.Errorf("group: %w", err)
	}
	return errStatus(protocol.Status_STATUS_FORBIDDEN, "not a member of the group")
}

// MemberCache returns the service's member cache (nil when
// Config.MemberCache disables it), for a fan-out in the same process.
func (s *Service) MemberCache() *members.Cache { return s.members }

// groupChanged drops the cached members of a group (this process's cache
// is behind the store).
func (s *Service) groupChanged(groupID int64) {
	if s.members != nil {
		s.members.Invalidate(groupID)
	}
}

// membersChanged follows a change of a group's members made through this
// process, after the store change: it takes effect here at once, and in
// the other processes when they get the published event (else within
// their cache TTL).
func (s *Service) membersChanged(ctx context.Context, groupID int64) {
	s.groupChanged(groupID)
	if s.deps.MemberEvents == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), memberEventTimeout)
	defer cancel()
	if err := s.deps.MemberEvents.Publish(ctx, groupID); err != nil {
		s.log.Warn("membership change not published: other processes see it within their member cache ttl", "group", groupID, "err", err)
	}
}

// store allocates a seq and message id and appends the message (touching
// users' conversation index in the same commit when it is inserted),
// retrying on a seq conflict with a seq past the stored maximum (the
// counter was behind the store).
//
// seq is the first attempt's seq (allocated with the dedup claim); a retry
// allocates its own.
func (s *Service) store(ctx context.Context, sender int64, convID string, users []int64, req *protocol.MsgSend, seq int64) (*protocol.Msg, bool, error) {
	for attempt := 0; ; attempt++ {
		t := time.Now()
		if attempt > 0 {
			var err error
			if seq, err = s.deps.Seq.NextAfterConflict(ctx, convID); err != nil {
				return nil, false, err
			}
		}
		// The attempt must end well within the settle time: a message
		// stored later could hide behind a settled_seq already reported.
		deadline := time.Now().Add(s.cfg.SettleTime / storeShare)
		id, err := s.deps.IDs.Next()
		if err != nil {
			return nil, false, fmt.Errorf("message id: %w", err)
		}
		m := &protocol.Msg{
			ConvId:      convID,
			Seq:         seq,
			MsgId:       id,
			Sender:      sender,
			ClientMsgId: req.ClientMsgId,
			ContentType: req.ContentType,
			Payload:     req.Payload,
			ServerTime:  s.deps.Now().UnixMilli(),
			ConvType:    req.ConvType,
			To:          req.To,
		}
		t = s.deps.Metrics.observePhase(phaseSeq, t)
		stored, dup, err := s.app.append(ctx, m, users, deadline)
		s.deps.Metrics.observePhase(phaseStore, t)
		if errors.Is(err, store.ErrSeqConflict) && attempt < seqConflictRetries {
			s.deps.Metrics.seqConflict()
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("append: %w", err)
		}
		return stored, dup, nil
	}
}

func (s *Service) publish(ctx context.Context, ev *logicpb.MsgEvent) {
	convID := ev.GetMsg().GetConvId()
	if convID == "" {
		convID = ev.GetReadMark().GetConvId()
	}
	s.publishKeyed(ctx, convID, ev)
}

// publishKeyed publishes ev with record key key (one key stays in order),
// see eventPublisher: it does not wait for the queue's acknowledgement
// when the producer can hand records over.
func (s *Service) publishKeyed(ctx context.Context, key string, ev *logicpb.MsgEvent) {
	s.events.publish(ctx, key, ev)
}

// checkAccess reports whether user may read convID.
func (s *Service) checkAccess(ctx context.Context, user int64, convID string) error {
	c, err := store.ParseConvID(convID)
	if err != nil {
		return errStatus(protocol.Status_STATUS_BAD_REQUEST, "malformed conv_id")
	}
	if c.Type == protocol.ConvType_CONV_TYPE_GROUP {
		return s.checkMember(ctx, c.A, user)
	}
	if c.A != user && c.B != user {
		return errStatus(protocol.Status_STATUS_FORBIDDEN, "not a party of the conversation")
	}
	return nil
}
