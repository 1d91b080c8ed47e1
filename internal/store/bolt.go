package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/config"
)

// BoltConfig configures the embedded store. The zero value is invalid only
// because Dir is required.
type BoltConfig struct {
	// Dir is the data directory; the database is the file BoltFileName
	// inside it. Created (0700) if missing. Required.
	Dir string `yaml:"dir"`
	// NoSync skips fsync after each commit: faster, but a machine crash may
	// lose the last commits. Default false.
	NoSync bool `yaml:"no_sync"`
	// MaxBatch bounds how many concurrent writes share one transaction
	// (group commit; a lone write never waits for others). Default 256.
	MaxBatch int `yaml:"max_batch"`
	// LockTimeout is how long Open waits for another process holding the
	// file. Default 1s.
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// Registerer registers the store metrics. Default nil: no metrics.
	Registerer prometheus.Registerer `yaml:"-"`
	// Logger. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Validate checks the configuration.
func (c *BoltConfig) Validate() error {
	if c.Dir == "" {
		return config.Errorf("dir", "required")
	}
	if c.MaxBatch < 0 {
		return config.Errorf("max_batch", "must be >= 0")
	}
	if c.LockTimeout < 0 {
		return config.Errorf("lock_timeout", "must be >= 0")
	}
	return nil
}

// BoltFileName is the database file inside BoltConfig.Dir.
const BoltFileName = "hubuim-store.db"

const (
	defaultBoltMaxBatch    = 256
	defaultBoltLockTimeout = time.Second
	boltDirMode            = 0o700
	boltFileMode           = 0o600
	boltSchemaVersion      = 1
	// maxAllocTries bounds the search for a free group id.
	maxAllocTries = 64
	u64           = 8 // bytes of a big-endian uint64 key
)

// Top-level buckets; see docs/storage.md for the layout.
var (
	bktMeta         = []byte("meta")          // "version" -> uint64
	bktMsgs         = []byte("msgs")          // conv_id -> {seq -> Msg}
	bktClientIDs    = []byte("client_ids")    // sender|client_msg_id -> seq|conv_id
	bktUserConvs    = []byte("user_convs")    // user -> {conv_id -> last|read}
	bktDelivered    = []byte("delivered")     // user -> {device -> {conv_id -> seq}}
	bktGroups       = []byte("groups")        // group -> owner|created|name
	bktGroupMembers = []byte("group_members") // group -> {user -> 1}
	bktUserGroups   = []byte("user_groups")   // user -> {group -> 1}
	keyVersion      = []byte("version")
	// present is the value of set-like buckets: bbolt's Get cannot tell an
	// empty value from a missing key.
	present    = []byte{1}
	allBuckets = [][]byte{bktMeta, bktMsgs, bktClientIDs, bktUserConvs, bktDelivered, bktGroups, bktGroupMembers, bktUserGroups}
)

// ErrCorrupt is returned when the embedded database holds data this code
// cannot decode.
var ErrCorrupt = errors.New("store: corrupt data")

// Bolt is the embedded Store (go.etcd.io/bbolt), for the standalone mode.
type Bolt struct {
	db     *bolt.DB
	gc     *groupCommit
	m      *metrics
	log    *slog.Logger
	closed atomic.Bool
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the embedded store in cfg.Dir.
func OpenBolt(cfg BoltConfig) (*Bolt, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultBoltMaxBatch
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = defaultBoltLockTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, boltDirMode); err != nil {
		return nil, fmt.Errorf("store: bolt: %w", err)
	}
	m, err := newMetrics(cfg.Registerer, "bolt")
	if err != nil {
		return nil, fmt.Errorf("store: bolt: metrics: %w", err)
	}
	path := filepath.Join(cfg.Dir, BoltFileName)
	db, err := bolt.Open(path, boltFileMode, &bolt.Options{Timeout: cfg.LockTimeout, NoSync: cfg.NoSync})
	if err != nil {
		return nil, fmt.Errorf("store: bolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bktMeta)
		if v := meta.Get(keyVersion); v != nil {
			if len(v) != u64 {
				return fmt.Errorf("%w: schema version", ErrCorrupt)
			}
			if got := binary.BigEndian.Uint64(v); got > boltSchemaVersion {
				return fmt.Errorf("store: bolt: data version %d is newer than this binary (%d)", got, boltSchemaVersion)
			}
			return nil
		}
		return meta.Put(keyVersion, u64Key(boltSchemaVersion))
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: bolt: init: %w", err)
	}
	return &Bolt{db: db, gc: &groupCommit{db: db, maxBatch: cfg.MaxBatch}, m: m, log: cfg.Logger}, nil
}

// Close closes the database; later calls return ErrClosed.
func (s *Bolt) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.db.Close()
}

func (s *Bolt) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

func (s *Bolt) mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) || errors.Is(err, berrors.ErrTxClosed) {
		return ErrClosed
	}
	return err
}

func (s *Bolt) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.mapErr(s.db.View(fn))
}

// batch runs fn in a write transaction shared with concurrent writers. fn
// may run more than once and must reset its outputs at its start.
func (s *Bolt) batch(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.mapErr(s.gc.do(fn))
}

func (s *Bolt) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.mapErr(s.db.Update(fn))
}

func u64Key(v uint64) []byte {
	var b [u64]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func idKey(v int64) []byte { return u64Key(uint64(v)) }

func getU64(b []byte, i int) int64 { return int64(binary.BigEndian.Uint64(b[i*u64:])) }

// ---- messages ----

// Append implements MessageStore.
func (s *Bolt) Append(ctx context.Context, m *protocol.Msg) (stored *protocol.Msg, dup bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppend, start, err) }()
	if err := ValidateMsg(m); err != nil {
		return nil, false, err
	}
	val, err := proto.Marshal(m)
	if err != nil {
		return nil, false, fmt.Errorf("store: bolt: marshal: %w", err)
	}
	var res AppendResult
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		var err error
		res, err = boltAppend(tx, m, val)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return res.Msg, res.Dup, res.Err
}

// AppendBatch implements MessageStore: one transaction for all of msgs.
func (s *Bolt) AppendBatch(ctx context.Context, msgs []*protocol.Msg) (res []AppendResult, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppendBatch, start, err) }()
	if err := validBatch("messages", len(msgs)); err != nil {
		return nil, err
	}
	vals := make([][]byte, len(msgs))
	for i, m := range msgs {
		if err := ValidateMsg(m); err != nil {
			continue
		}
		if vals[i], err = proto.Marshal(m); err != nil {
			return nil, fmt.Errorf("store: bolt: marshal: %w", err)
		}
	}
	res = make([]AppendResult, len(msgs))
	err = s.update(ctx, func(tx *bolt.Tx) error {
		for i, m := range msgs {
			if err := ValidateMsg(m); err != nil {
				res[i] = AppendResult{Err: err}
				continue
			}
			r, err := boltAppend(tx, m, vals[i])
			if err != nil {
				return err
			}
			res[i] = r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// AppendTouch implements MessageStore: one transaction, shared with
// concurrent writers, for all of items.
func (s *Bolt) AppendTouch(ctx context.Context, items []AppendItem) (res []AppendResult, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppendTouch, start, err) }()
	if err := validItems(items); err != nil {
		return nil, err
	}
	res = make([]AppendResult, len(items))
	vals := make([][]byte, len(items))
	valid := 0
	for i, it := range items {
		if res[i].Err = validItem(it); res[i].Err != nil {
			continue
		}
		if vals[i], err = proto.Marshal(it.Msg); err != nil {
			return nil, fmt.Errorf("store: bolt: marshal: %w", err)
		}
		valid++
	}
	if valid == 0 {
		return res, nil
	}
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		for i, it := range items {
			if vals[i] == nil {
				continue // invalid: res[i].Err is set
			}
			r, err := boltAppend(tx, it.Msg, vals[i])
			if err != nil {
				return err
			}
			res[i] = r
			if r.Err == nil && !r.Dup && len(it.Users) > 0 {
				if err := boltTouch(tx, it.Users, []byte(it.Msg.GetConvId()), it.Msg.GetSeq()); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func clientKey(sender int64, clientMsgID string) []byte {
	k := make([]byte, u64, u64+len(clientMsgID))
	binary.BigEndian.PutUint64(k, uint64(sender))
	return append(k, clientMsgID...)
}

// boltAppend inserts m (encoded as val) unless its seq or client id is
// taken. Per-message outcomes go in the result; the error aborts the tx.
func boltAppend(tx *bolt.Tx, m *protocol.Msg, val []byte) (AppendResult, error) {
	conv, err := tx.Bucket(bktMsgs).CreateBucketIfNotExists([]byte(m.GetConvId()))
	if err != nil {
		return AppendResult{}, err
	}
	seqKey := idKey(m.GetSeq())
	if v := conv.Get(seqKey); v != nil {
		old, err := decodeMsg(v)
		if err != nil {
			return AppendResult{}, err
		}
		if sameMessage(old, m) {
			return AppendResult{Msg: old, Dup: true}, nil
		}
		return AppendResult{Err: ErrSeqConflict}, nil
	}
	cids := tx.Bucket(bktClientIDs)
	var ck []byte
	if m.GetClientMsgId() != "" {
		ck = clientKey(m.GetSender(), m.GetClientMsgId())
		if ref := cids.Get(ck); ref != nil {
			old, err := boltByRef(tx, ref)
			if err != nil {
				return AppendResult{}, err
			}
			return AppendResult{Msg: old, Dup: true}, nil
		}
	}
	if err := conv.Put(seqKey, val); err != nil {
		return AppendResult{}, err
	}
	if ck != nil {
		ref := make([]byte, u64, u64+len(m.GetConvId()))
		binary.BigEndian.PutUint64(ref, uint64(m.GetSeq()))
		if err := cids.Put(ck, append(ref, m.GetConvId()...)); err != nil {
			return AppendResult{}, err
		}
	}
	return AppendResult{Msg: m}, nil
}

// sameMessage reports whether stored old and new m are the same message:
// same msg_id, or same sender and non-empty client message id.
func sameMessage(old, m *protocol.Msg) bool {
	if old.GetMsgId() == m.GetMsgId() {
		return true
	}
	return m.GetClientMsgId() != "" && old.GetSender() == m.GetSender() && old.GetClientMsgId() == m.GetClientMsgId()
}

// boltByRef loads the message a client_ids value (seq|conv_id) points to.
func boltByRef(tx *bolt.Tx, ref []byte) (*protocol.Msg, error) {
	if len(ref) < u64 {
		return nil, fmt.Errorf("%w: client id reference", ErrCorrupt)
	}
	conv := tx.Bucket(bktMsgs).Bucket(ref[u64:])
	if conv == nil {
		return nil, fmt.Errorf("%w: client id points to a missing conversation", ErrCorrupt)
	}
	v := conv.Get(ref[:u64])
	if v == nil {
		return nil, fmt.Errorf("%w: client id points to a missing message", ErrCorrupt)
	}
	return decodeMsg(v)
}

func decodeMsg(v []byte) (*protocol.Msg, error) {
	m := &protocol.Msg{}
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("%w: message: %v", ErrCorrupt, err)
	}
	return m, nil
}

// Range implements MessageStore.
func (s *Bolt) Range(ctx context.Context, convID string, fromSeq int64, limit int) (msgs []*protocol.Msg, more bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opRange, start, err) }()
	if err := validConv(convID); err != nil {
		return nil, false, err
	}
	limit = rangeLimit(limit)
	fromSeq = max(fromSeq, 0)
	err = s.view(ctx, func(tx *bolt.Tx) error {
		msgs, more = nil, false
		conv := tx.Bucket(bktMsgs).Bucket([]byte(convID))
		if conv == nil || fromSeq == math.MaxInt64 {
			return nil
		}
		c := conv.Cursor()
		for k, v := c.Seek(idKey(fromSeq + 1)); k != nil; k, v = c.Next() {
			if len(msgs) == limit {
				more = true
				break
			}
			m, err := decodeMsg(v)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return msgs, more, nil
}

// SyncPage implements SyncPager (in-process: three reads).
func (s *Bolt) SyncPage(ctx context.Context, userID int64, convID string, fromSeq int64, limit int) (SyncPage, error) {
	if err := validUserConv(userID, convID); err != nil {
		return SyncPage{}, err
	}
	var (
		page SyncPage
		err  error
	)
	if page.Msgs, page.More, err = s.Range(ctx, convID, fromSeq, limit); err != nil {
		return SyncPage{}, err
	}
	if page.MaxSeq, err = s.MaxSeq(ctx, convID); err != nil {
		return SyncPage{}, err
	}
	st, err := s.Conversation(ctx, userID, convID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return SyncPage{}, err
	}
	page.ReadSeq = st.ReadSeq
	return page, nil
}

// MaxSeq implements MessageStore.
func (s *Bolt) MaxSeq(ctx context.Context, convID string) (seq int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opMaxSeq, start, err) }()
	if err := validConv(convID); err != nil {
		return 0, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		seq = 0
		if conv := tx.Bucket(bktMsgs).Bucket([]byte(convID)); conv != nil {
			if k, _ := conv.Cursor().Last(); k != nil {
				seq = getU64(k, 0)
			}
		}
		return nil
	})
	return seq, err
}

// GetByClientID implements MessageStore.
func (s *Bolt) GetByClientID(ctx context.Context, sender int64, clientMsgID string) (m *protocol.Msg, err error) {
	start := time.Now()
	defer func() { s.m.done(opGetByClientID, start, err) }()
	if !ValidClientMsgID(clientMsgID) {
		return nil, fmt.Errorf("%w: client_msg_id must be 1..%d bytes", ErrInvalid, MaxClientMsgIDLen)
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		ref := tx.Bucket(bktClientIDs).Get(clientKey(sender, clientMsgID))
		if ref == nil {
			return ErrNotFound
		}
		var err error
		m, err = boltByRef(tx, ref)
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// ---- conversation index ----

// boltMaxSeq is the highest stored seq of conv, 0 if none.
func boltMaxSeq(tx *bolt.Tx, conv []byte) int64 {
	if b := tx.Bucket(bktMsgs).Bucket(conv); b != nil {
		if k, _ := b.Cursor().Last(); k != nil {
			return getU64(k, 0)
		}
	}
	return 0
}

// Touch implements ConvIndex.
func (s *Bolt) Touch(ctx context.Context, userIDs []int64, convID string, lastSeq int64) (err error) {
	start := time.Now()
	defer func() { s.m.done(opTouch, start, err) }()
	if err := validTouch(userIDs, convID, lastSeq); err != nil {
		return err
	}
	ck := []byte(convID)
	return s.batch(ctx, func(tx *bolt.Tx) error {
		return boltTouch(tx, userIDs, ck, lastSeq)
	})
}

// boltTouch raises the last seq of conversation ck to lastSeq for users.
func boltTouch(tx *bolt.Tx, userIDs []int64, ck []byte, lastSeq int64) error {
	root := tx.Bucket(bktUserConvs)
	for _, u := range userIDs {
		b, err := root.CreateBucketIfNotExists(idKey(u))
		if err != nil {
			return err
		}
		var read int64
		if v := b.Get(ck); v != nil {
			if len(v) != 2*u64 {
				return fmt.Errorf("%w: conversation state", ErrCorrupt)
			}
			if getU64(v, 0) >= lastSeq {
				continue
			}
			read = getU64(v, 1)
		}
		if err := b.Put(ck, convState(lastSeq, read)); err != nil {
			return err
		}
	}
	return nil
}

func convState(last, read int64) []byte {
	v := make([]byte, 2*u64)
	binary.BigEndian.PutUint64(v, uint64(last))
	binary.BigEndian.PutUint64(v[u64:], uint64(read))
	return v
}

// SetRead implements ConvIndex.
func (s *Bolt) SetRead(ctx context.Context, userID int64, convID string, readSeq int64) (read int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opSetRead, start, err) }()
	if err := validUserConv(userID, convID); err != nil {
		return 0, err
	}
	found := false
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		// A missing conversation is reported through found, not an error:
		// an error would abort the transaction shared with other writers.
		read, found = 0, false
		b := tx.Bucket(bktUserConvs).Bucket(idKey(userID))
		if b == nil {
			return nil
		}
		v := b.Get([]byte(convID))
		if v == nil {
			return nil
		}
		found = true
		if len(v) != 2*u64 {
			return fmt.Errorf("%w: conversation state", ErrCorrupt)
		}
		touched, cur := getU64(v, 0), getU64(v, 1)
		last := max(touched, boltMaxSeq(tx, []byte(convID)))
		read = max(cur, min(readSeq, last))
		if read == cur && last == touched {
			return nil
		}
		return b.Put([]byte(convID), convState(last, read))
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, ErrNotFound
	}
	return read, nil
}

// SetDelivered implements ConvIndex.
func (s *Bolt) SetDelivered(ctx context.Context, userID int64, deviceKey, convID string, seq int64) (err error) {
	start := time.Now()
	defer func() { s.m.done(opSetDelivered, start, err) }()
	if err := validDelivered(userID, deviceKey, convID, seq); err != nil {
		return err
	}
	return s.batch(ctx, func(tx *bolt.Tx) error {
		ub, err := tx.Bucket(bktDelivered).CreateBucketIfNotExists(idKey(userID))
		if err != nil {
			return err
		}
		db, err := ub.CreateBucketIfNotExists([]byte(deviceKey))
		if err != nil {
			return err
		}
		if v := db.Get([]byte(convID)); len(v) == u64 && getU64(v, 0) >= seq {
			return nil
		}
		return db.Put([]byte(convID), idKey(seq))
	})
}

// Delivered implements ConvIndex.
func (s *Bolt) Delivered(ctx context.Context, userID int64, deviceKey string) (marks map[string]int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opDelivered, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	if err := validDeviceKey(deviceKey); err != nil {
		return nil, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		marks = map[string]int64{}
		ub := tx.Bucket(bktDelivered).Bucket(idKey(userID))
		if ub == nil {
			return nil
		}
		db := ub.Bucket([]byte(deviceKey))
		if db == nil {
			return nil
		}
		return db.ForEach(func(k, v []byte) error {
			if len(v) != u64 {
				return fmt.Errorf("%w: delivered mark", ErrCorrupt)
			}
			marks[string(k)] = getU64(v, 0)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return marks, nil
}

// Conversation implements ConvIndex.
func (s *Bolt) Conversation(ctx context.Context, userID int64, convID string) (st ConvState, err error) {
	start := time.Now()
	defer func() { s.m.done(opConversation, start, err) }()
	if err := validUserConv(userID, convID); err != nil {
		return ConvState{}, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktUserConvs).Bucket(idKey(userID))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(convID))
		if v == nil {
			return ErrNotFound
		}
		if len(v) != 2*u64 {
			return fmt.Errorf("%w: conversation state", ErrCorrupt)
		}
		last := max(getU64(v, 0), boltMaxSeq(tx, []byte(convID)))
		st = ConvState{ConvID: convID, LastSeq: last, ReadSeq: getU64(v, 1)}
		return nil
	})
	if err != nil {
		return ConvState{}, err
	}
	return st, nil
}

// Conversations implements ConvIndex.
func (s *Bolt) Conversations(ctx context.Context, userID int64, cursors map[string]int64) (out []ConvState, err error) {
	start := time.Now()
	defer func() { s.m.done(opConversations, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	if err := validBatch("cursors", len(cursors)); err != nil {
		return nil, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		b := tx.Bucket(bktUserConvs).Bucket(idKey(userID))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) != 2*u64 {
				return fmt.Errorf("%w: conversation state", ErrCorrupt)
			}
			last := max(getU64(v, 0), boltMaxSeq(tx, k))
			if cur, ok := cursors[string(k)]; ok && last <= cur {
				return nil
			}
			out = append(out, ConvState{ConvID: string(k), LastSeq: last, ReadSeq: getU64(v, 1)})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- groups ----

func encodeGroup(g Group) []byte {
	v := make([]byte, 2*u64, 2*u64+len(g.Name))
	binary.BigEndian.PutUint64(v, uint64(g.Owner))
	binary.BigEndian.PutUint64(v[u64:], uint64(g.CreatedAt))
	return append(v, g.Name...)
}

func decodeGroup(id int64, v []byte) (Group, error) {
	if len(v) < 2*u64 {
		return Group{}, fmt.Errorf("%w: group", ErrCorrupt)
	}
	return Group{ID: id, Owner: getU64(v, 0), CreatedAt: getU64(v, 1), Name: string(v[2*u64:])}, nil
}

// CreateGroup implements GroupStore.
func (s *Bolt) CreateGroup(ctx context.Context, g Group) (out Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opCreateGroup, start, err) }()
	if err := validNewGroup(g); err != nil {
		return Group{}, err
	}
	if g.CreatedAt == 0 {
		g.CreatedAt = time.Now().UnixMilli()
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		groups := tx.Bucket(bktGroups)
		out = g
		if out.ID == 0 {
			for range maxAllocTries {
				n, err := groups.NextSequence()
				if err != nil {
					return err
				}
				if groups.Get(idKey(int64(n))) == nil {
					out.ID = int64(n)
					break
				}
			}
			if out.ID == 0 {
				return fmt.Errorf("store: bolt: no free group id after %d tries", maxAllocTries)
			}
		} else if groups.Get(idKey(out.ID)) != nil {
			return ErrExists
		}
		if err := groups.Put(idKey(out.ID), encodeGroup(out)); err != nil {
			return err
		}
		_, err := boltAddMembers(tx, out.ID, []int64{out.Owner})
		return err
	})
	if err != nil {
		return Group{}, err
	}
	return out, nil
}

// Group implements GroupStore.
func (s *Bolt) Group(ctx context.Context, groupID int64) (g Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opGroup, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return Group{}, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktGroups).Get(idKey(groupID))
		if v == nil {
			return ErrNotFound
		}
		var err error
		g, err = decodeGroup(groupID, v)
		return err
	})
	if err != nil {
		return Group{}, err
	}
	return g, nil
}

func boltAddMembers(tx *bolt.Tx, groupID int64, users []int64) (int, error) {
	mb, err := tx.Bucket(bktGroupMembers).CreateBucketIfNotExists(idKey(groupID))
	if err != nil {
		return 0, err
	}
	ug := tx.Bucket(bktUserGroups)
	added := 0
	for _, u := range users {
		if mb.Get(idKey(u)) != nil {
			continue
		}
		if err := mb.Put(idKey(u), present); err != nil {
			return 0, err
		}
		b, err := ug.CreateBucketIfNotExists(idKey(u))
		if err != nil {
			return 0, err
		}
		if err := b.Put(idKey(groupID), present); err != nil {
			return 0, err
		}
		added++
	}
	return added, nil
}

// AddMembers implements GroupStore.
func (s *Bolt) AddMembers(ctx context.Context, groupID int64, userIDs []int64) (added int, err error) {
	start := time.Now()
	defer func() { s.m.done(opAddMembers, start, err) }()
	if err := validMembers(groupID, userIDs); err != nil {
		return 0, err
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bktGroups).Get(idKey(groupID)) == nil {
			return ErrNotFound
		}
		var err error
		added, err = boltAddMembers(tx, groupID, userIDs)
		return err
	})
	if err != nil {
		return 0, err
	}
	return added, nil
}

// RemoveMembers implements GroupStore.
func (s *Bolt) RemoveMembers(ctx context.Context, groupID int64, userIDs []int64) (removed int, err error) {
	start := time.Now()
	defer func() { s.m.done(opRemoveMembers, start, err) }()
	if err := validMembers(groupID, userIDs); err != nil {
		return 0, err
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		removed = 0
		if tx.Bucket(bktGroups).Get(idKey(groupID)) == nil {
			return ErrNotFound
		}
		mb := tx.Bucket(bktGroupMembers).Bucket(idKey(groupID))
		if mb == nil {
			return nil
		}
		ug := tx.Bucket(bktUserGroups)
		for _, u := range userIDs {
			if mb.Get(idKey(u)) == nil {
				continue
			}
			if err := mb.Delete(idKey(u)); err != nil {
				return err
			}
			if b := ug.Bucket(idKey(u)); b != nil {
				if err := b.Delete(idKey(groupID)); err != nil {
					return err
				}
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// Members implements GroupStore.
func (s *Bolt) Members(ctx context.Context, groupID int64) (users []int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opMembers, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return nil, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		users = nil
		if tx.Bucket(bktGroups).Get(idKey(groupID)) == nil {
			return ErrNotFound
		}
		mb := tx.Bucket(bktGroupMembers).Bucket(idKey(groupID))
		if mb == nil {
			return nil
		}
		users = make([]int64, 0, mb.Stats().KeyN)
		return mb.ForEach(func(k, _ []byte) error {
			users = append(users, getU64(k, 0))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// IsMember implements GroupStore.
func (s *Bolt) IsMember(ctx context.Context, groupID, userID int64) (ok bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opIsMember, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return false, err
	}
	if err := validUser(userID); err != nil {
		return false, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		mb := tx.Bucket(bktGroupMembers).Bucket(idKey(groupID))
		ok = mb != nil && mb.Get(idKey(userID)) != nil
		return nil
	})
	return ok, err
}

// MemberCount implements GroupStore.
func (s *Bolt) MemberCount(ctx context.Context, groupID int64) (n int, err error) {
	start := time.Now()
	defer func() { s.m.done(opMemberCount, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return 0, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		n = 0
		if tx.Bucket(bktGroups).Get(idKey(groupID)) == nil {
			return ErrNotFound
		}
		if mb := tx.Bucket(bktGroupMembers).Bucket(idKey(groupID)); mb != nil {
			n = mb.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Groups implements GroupStore.
func (s *Bolt) Groups(ctx context.Context, userID int64) (out []Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opGroups, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		b := tx.Bucket(bktUserGroups).Bucket(idKey(userID))
		if b == nil {
			return nil
		}
		groups := tx.Bucket(bktGroups)
		return b.ForEach(func(k, _ []byte) error {
			v := groups.Get(k)
			if v == nil {
				return nil // membership of a group that no longer exists
			}
			g, err := decodeGroup(getU64(k, 0), v)
			if err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
