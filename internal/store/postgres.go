package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/config"
)

// PostgresConfig configures the PostgreSQL store.
type PostgresConfig struct {
	// DSN is a libpq connection string or URL. Required unless Pool is set.
	DSN string `yaml:"dsn"`
	// Schema, when set, is the schema the store uses (search_path of every
	// connection); it is created if missing. Default "": the DSN's
	// search_path (normally "public").
	Schema string `yaml:"schema"`
	// MaxConns bounds the pool. Default 0: pgxpool's default (max(4, CPUs)).
	MaxConns int32 `yaml:"max_conns"`
	// SkipMigrate leaves the schema alone at start (migrations run by a
	// separate command). Default false: NewPostgres runs Migrate.
	SkipMigrate bool `yaml:"skip_migrate"`
	// Pool is an existing pool to use instead of DSN; Close leaves it open.
	// Default nil.
	Pool *pgxpool.Pool `yaml:"-"`
	// Registerer registers the store metrics. Default nil: no metrics.
	Registerer prometheus.Registerer `yaml:"-"`
	// Logger. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// schemaName is what PostgresConfig.Schema accepts: a plain lower-case
// identifier, so it never needs quoting surprises.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate checks the configuration.
func (c *PostgresConfig) Validate() error {
	if c.DSN == "" && c.Pool == nil {
		return config.Errorf("dsn", "required")
	}
	if c.Schema != "" && !schemaName.MatchString(c.Schema) {
		return config.Errorf("schema", "%q is not a lower-case identifier", c.Schema)
	}
	if c.MaxConns < 0 {
		return config.Errorf("max_conns", "must be >= 0")
	}
	return nil
}

// PostgreSQL error codes the store handles.
const (
	pgUniqueViolation = "23505"
	pgDuplicateSchema = "42P06"
	pgDeadlock        = "40P01"
	// maxAppendTries bounds Append's insert/resolve loop; a second round only
	// happens if a conflicting row vanished, which the store never does.
	maxAppendTries = 3
)

// errRetry says the conflicting row of an insert could not be found again.
var errRetry = errors.New("store: conflicting row not found")

const msgColumns = `conv_id, seq, msg_id, sender, client_msg_id, conv_type, peer, content_type, payload, server_time`

const (
	sqlInsertMsg = `INSERT INTO messages (` + msgColumns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`
	// sqlAppendTouch inserts a batch of messages and touches the users of
	// the inserted ones in one statement (one transaction, one commit).
	// Touches join the inserted rows by (conv_id, seq, msg_id); a user's
	// touches of one conversation collapse to the highest seq, in key
	// order against deadlocks. A touch only creates the user's entry: an
	// existing one is left alone, because a user's LastSeq is never read
	// below the conversation's highest stored message (sqlEffectiveLast)
	// and the touched seq is that of a message stored by this statement.
	// Not rewriting the two hot user_convs rows of a 1:1 conversation on
	// every message saves a row version, its index entries and WAL per
	// user per message.
	sqlAppendTouch = `WITH ins AS (
			INSERT INTO messages (` + msgColumns + `)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
				$6::smallint[], $7::bigint[], $8::integer[], $9::bytea[], $10::bigint[])
			ON CONFLICT DO NOTHING
			RETURNING conv_id, seq, msg_id),
		t AS (
			INSERT INTO user_convs (user_id, conv_id, last_seq)
			SELECT tu.u, ins.conv_id, max(ins.seq)
			FROM ins JOIN unnest($11::text[], $12::bigint[], $13::bigint[], $14::bigint[]) AS tu(c, s, id, u)
				ON tu.c = ins.conv_id AND tu.s = ins.seq AND tu.id = ins.msg_id
			GROUP BY tu.u, ins.conv_id ORDER BY tu.u, ins.conv_id
			ON CONFLICT (user_id, conv_id) DO NOTHING)
		SELECT conv_id, seq, msg_id FROM ins`
	sqlMsgBySeq    = `SELECT ` + msgColumns + ` FROM messages WHERE conv_id = $1 AND seq = $2`
	sqlMsgByClient = `SELECT ` + msgColumns + ` FROM messages WHERE sender = $1 AND client_msg_id = $2`
	sqlRange       = `SELECT ` + msgColumns + ` FROM messages WHERE conv_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`
	sqlMaxSeq      = `SELECT coalesce(max(seq), 0) FROM messages WHERE conv_id = $1`
	sqlTouch       = `INSERT INTO user_convs (user_id, conv_id, last_seq)
		SELECT u, $2, $3 FROM unnest($1::bigint[]) AS u
		ON CONFLICT (user_id, conv_id) DO UPDATE SET last_seq = excluded.last_seq
		WHERE user_convs.last_seq < excluded.last_seq`
	// A user's LastSeq is the higher of the touched last_seq and the
	// conversation's highest stored seq (a backward scan of the messages PK).
	sqlEffectiveLast = `greatest(u.last_seq, coalesce((SELECT max(m.seq) FROM messages m WHERE m.conv_id = u.conv_id), 0))`
	sqlSetRead       = `WITH m AS (SELECT coalesce(max(seq), 0) AS s FROM messages WHERE conv_id = $2)
		UPDATE user_convs SET last_seq = greatest(last_seq, m.s),
			read_seq = greatest(read_seq, least($3, greatest(last_seq, m.s)))
		FROM m WHERE user_id = $1 AND conv_id = $2 RETURNING read_seq`
	sqlSetDelivered = `INSERT INTO delivered (user_id, device_key, conv_id, seq) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_key, conv_id) DO UPDATE SET seq = excluded.seq
		WHERE delivered.seq < excluded.seq`
	sqlDelivered    = `SELECT conv_id, seq FROM delivered WHERE user_id = $1 AND device_key = $2`
	sqlConversation = `SELECT ` + sqlEffectiveLast + `, u.read_seq FROM user_convs u
		WHERE u.user_id = $1 AND u.conv_id = $2`
	sqlConversations = `SELECT s.conv_id, s.last_seq, s.read_seq FROM (
			SELECT u.conv_id, ` + sqlEffectiveLast + ` AS last_seq, u.read_seq
			FROM user_convs u WHERE u.user_id = $1) s
		LEFT JOIN unnest($2::text[], $3::bigint[]) AS c(conv_id, seq) ON c.conv_id COLLATE "C" = s.conv_id
		WHERE c.seq IS NULL OR s.last_seq > c.seq
		ORDER BY s.conv_id`
	sqlAllConversations = `SELECT u.conv_id, ` + sqlEffectiveLast + `, u.read_seq FROM user_convs u
		WHERE u.user_id = $1 ORDER BY u.conv_id`
	sqlNewGroup = `INSERT INTO chat_groups (name, owner, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO NOTHING RETURNING id`
	sqlNewGroupID = `INSERT INTO chat_groups (id, name, owner, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO NOTHING RETURNING id`
	sqlGroup      = `SELECT id, name, owner, created_at FROM chat_groups WHERE id = $1`
	sqlAddMembers = `WITH g AS (SELECT id FROM chat_groups WHERE id = $1),
		ins AS (INSERT INTO group_members (group_id, user_id, joined_at)
			SELECT g.id, u, $3 FROM g, unnest($2::bigint[]) AS u
			ON CONFLICT DO NOTHING RETURNING 1)
		SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM ins)`
	sqlRemoveMembers = `WITH g AS (SELECT id FROM chat_groups WHERE id = $1),
		del AS (DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY($2::bigint[]) RETURNING 1)
		SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM del)`
	sqlMembers     = `SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY user_id`
	sqlGroupExists = `SELECT EXISTS (SELECT 1 FROM chat_groups WHERE id = $1)`
	sqlIsMember    = `SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2)`
	sqlMemberCount = `SELECT EXISTS (SELECT 1 FROM chat_groups WHERE id = $1),
		(SELECT count(*) FROM group_members WHERE group_id = $1)`
	sqlGroups = `SELECT g.id, g.name, g.owner, g.created_at FROM group_members m
		JOIN chat_groups g ON g.id = m.group_id WHERE m.user_id = $1 ORDER BY g.id`
)

// Postgres is the PostgreSQL Store.
type Postgres struct {
	pool    *pgxpool.Pool
	ownPool bool
	m       *metrics
	log     *slog.Logger
	closed  atomic.Bool
	// delivered coalesces concurrent SetDelivered calls into one statement.
	delivered deliveredBatcher
}

var _ Store = (*Postgres)(nil)

// NewPostgres connects, and migrates unless cfg.SkipMigrate.
func NewPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer, "postgres")
	if err != nil {
		return nil, fmt.Errorf("store: postgres: metrics: %w", err)
	}
	s := &Postgres{pool: cfg.Pool, m: m, log: cfg.Logger}
	s.delivered.exec = s.setDeliveredBatch
	if s.pool == nil {
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, config.Errorf("dsn", "%v", err)
		}
		if cfg.MaxConns > 0 {
			pc.MaxConns = cfg.MaxConns
		}
		if cfg.Schema != "" {
			pc.ConnConfig.RuntimeParams["search_path"] = cfg.Schema
		}
		if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("store: postgres: %w", err)
		}
		s.ownPool = true
	}
	err = s.init(ctx, cfg)
	if err == nil && cfg.Registerer != nil {
		if err = cfg.Registerer.Register(newPoolCollector(s.pool)); err != nil {
			err = fmt.Errorf("store: postgres: pool metrics: %w", err)
		}
	}
	if err != nil {
		if s.ownPool {
			s.pool.Close()
		}
		return nil, err
	}
	return s, nil
}

func (s *Postgres) init(ctx context.Context, cfg PostgresConfig) error {
	if cfg.Schema != "" {
		_, err := s.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{cfg.Schema}.Sanitize())
		var pe *pgconn.PgError
		// Two replicas creating the schema at once: one loses the race.
		if err != nil && !(errors.As(err, &pe) && (pe.Code == pgUniqueViolation || pe.Code == pgDuplicateSchema)) {
			return fmt.Errorf("store: postgres: create schema: %w", err)
		}
	}
	if cfg.SkipMigrate {
		return s.pool.Ping(ctx)
	}
	return Migrate(ctx, s.pool)
}

// Pool returns the underlying pool (for health checks).
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool if the store opened it; later calls return
// ErrClosed.
func (s *Postgres) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

func (s *Postgres) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

func wrapPG(err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
		return err
	}
	return fmt.Errorf("store: postgres: %w", err)
}

// ---- messages ----

func msgArgs(m *protocol.Msg) []any {
	return []any{m.GetConvId(), m.GetSeq(), m.GetMsgId(), m.GetSender(), m.GetClientMsgId(),
		int16(m.GetConvType()), m.GetTo(), m.GetContentType(), nonNil(m.GetPayload()), m.GetServerTime()}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanMsg(row pgx.Row) (*protocol.Msg, error) {
	m := &protocol.Msg{}
	var convType int16
	err := row.Scan(&m.ConvId, &m.Seq, &m.MsgId, &m.Sender, &m.ClientMsgId, &convType, &m.To,
		&m.ContentType, &m.Payload, &m.ServerTime)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	m.ConvType = protocol.ConvType(convType)
	if len(m.Payload) == 0 {
		m.Payload = nil // proto3 does not tell empty from absent
	}
	return m, nil
}

// Append implements MessageStore.
func (s *Postgres) Append(ctx context.Context, m *protocol.Msg) (stored *protocol.Msg, dup bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppend, start, err) }()
	if err := ValidateMsg(m); err != nil {
		return nil, false, err
	}
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	for range maxAppendTries {
		tag, err := s.pool.Exec(ctx, sqlInsertMsg, msgArgs(m)...)
		if err != nil {
			return nil, false, wrapPG(err)
		}
		if tag.RowsAffected() == 1 {
			return m, false, nil
		}
		r, err := s.resolve(ctx, m)
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return nil, false, wrapPG(err)
		}
		return r.Msg, r.Dup, r.Err
	}
	return nil, false, wrapPG(errRetry)
}

// resolve explains why inserting m did nothing: its seq is taken (by the
// same message or another) or its client id is.
func (s *Postgres) resolve(ctx context.Context, m *protocol.Msg) (AppendResult, error) {
	old, err := scanMsg(s.pool.QueryRow(ctx, sqlMsgBySeq, m.GetConvId(), m.GetSeq()))
	switch {
	case err == nil:
		if sameMessage(old, m) {
			return AppendResult{Msg: old, Dup: true}, nil
		}
		return AppendResult{Err: ErrSeqConflict}, nil
	case !errors.Is(err, ErrNotFound):
		return AppendResult{}, err
	}
	if m.GetClientMsgId() != "" {
		old, err := scanMsg(s.pool.QueryRow(ctx, sqlMsgByClient, m.GetSender(), m.GetClientMsgId()))
		switch {
		case err == nil:
			return AppendResult{Msg: old, Dup: true}, nil
		case !errors.Is(err, ErrNotFound):
			return AppendResult{}, err
		}
	}
	return AppendResult{}, errRetry
}

// AppendBatch implements MessageStore: the inserts go in one pipelined round
// trip (one implicit transaction); messages that were not inserted are then
// resolved one by one (rare: duplicates and conflicts).
func (s *Postgres) AppendBatch(ctx context.Context, msgs []*protocol.Msg) (res []AppendResult, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppendBatch, start, err) }()
	if err := validBatch("messages", len(msgs)); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	res = make([]AppendResult, len(msgs))
	b := &pgx.Batch{}
	queued := make([]int, 0, len(msgs))
	for i, m := range msgs {
		if err := ValidateMsg(m); err != nil {
			res[i].Err = err
			continue
		}
		b.Queue(sqlInsertMsg, msgArgs(m)...)
		queued = append(queued, i)
	}
	if len(queued) == 0 {
		return res, nil
	}
	inserted := make([]bool, len(msgs))
	br := s.pool.SendBatch(ctx, b)
	for _, i := range queued {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return nil, wrapPG(err)
		}
		inserted[i] = tag.RowsAffected() == 1
	}
	if err := br.Close(); err != nil {
		return nil, wrapPG(err)
	}
	for _, i := range queued {
		if inserted[i] {
			res[i] = AppendResult{Msg: msgs[i]}
			continue
		}
		r, err := s.resolve(ctx, msgs[i])
		if errors.Is(err, errRetry) {
			// Vanished conflicting row: fall back to a single append.
			r.Msg, r.Dup, r.Err = s.Append(ctx, msgs[i])
			if r.Err != nil && !errors.Is(r.Err, ErrSeqConflict) {
				return nil, r.Err
			}
		} else if err != nil {
			return nil, wrapPG(err)
		}
		res[i] = r
	}
	return res, nil
}

// appendTouchArgs are the column arrays of sqlAppendTouch.
type appendTouchArgs struct {
	convs, clientIDs                 []string
	seqs, ids, senders, peers, times []int64
	convTypes                        []int16
	contentTypes                     []int32
	payloads                         [][]byte
	tConvs                           []string
	tSeqs, tIDs, tUsers              []int64
}

func (a *appendTouchArgs) add(it AppendItem) {
	m := it.Msg
	a.convs = append(a.convs, m.GetConvId())
	a.seqs = append(a.seqs, m.GetSeq())
	a.ids = append(a.ids, m.GetMsgId())
	a.senders = append(a.senders, m.GetSender())
	a.clientIDs = append(a.clientIDs, m.GetClientMsgId())
	a.convTypes = append(a.convTypes, int16(m.GetConvType()))
	a.peers = append(a.peers, m.GetTo())
	a.contentTypes = append(a.contentTypes, m.GetContentType())
	a.payloads = append(a.payloads, nonNil(m.GetPayload()))
	a.times = append(a.times, m.GetServerTime())
	for _, u := range it.Users {
		a.tConvs = append(a.tConvs, m.GetConvId())
		a.tSeqs = append(a.tSeqs, m.GetSeq())
		a.tIDs = append(a.tIDs, m.GetMsgId())
		a.tUsers = append(a.tUsers, u)
	}
}

// AppendTouch implements MessageStore: one statement inserts the messages
// and touches the users of the inserted ones (one commit); messages that
// were not inserted are then resolved one by one (rare: duplicates and
// conflicts). A deadlock between concurrent calls (rolled back whole) is
// retried.
func (s *Postgres) AppendTouch(ctx context.Context, items []AppendItem) (res []AppendResult, err error) {
	start := time.Now()
	defer func() { s.m.done(opAppendTouch, start, err) }()
	if err := validItems(items); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	res = make([]AppendResult, len(items))
	var a appendTouchArgs
	queued := 0
	for i, it := range items {
		if res[i].Err = validItem(it); res[i].Err == nil {
			a.add(it)
			queued++
		}
	}
	if queued == 0 {
		return res, nil
	}
	inserted := make([]bool, len(items))
	for try := 1; ; try++ {
		err = s.appendTouch(ctx, &a, items, res, inserted)
		var pgErr *pgconn.PgError
		if err == nil || try == maxAppendTries || !errors.As(err, &pgErr) || pgErr.Code != pgDeadlock {
			break
		}
		clear(inserted)
	}
	if err != nil {
		return nil, wrapPG(err)
	}
	for i, it := range items {
		if res[i].Err != nil {
			continue // invalid
		}
		if inserted[i] {
			res[i] = AppendResult{Msg: it.Msg}
			continue
		}
		r, err := s.resolve(ctx, it.Msg)
		if errors.Is(err, errRetry) {
			// Vanished conflicting row: fall back to a single append.
			r.Msg, r.Dup, r.Err = s.Append(ctx, it.Msg)
			if r.Err != nil && !errors.Is(r.Err, ErrSeqConflict) {
				return nil, r.Err
			}
			if r.Err == nil && !r.Dup && len(it.Users) > 0 {
				if err := s.Touch(ctx, it.Users, it.Msg.GetConvId(), it.Msg.GetSeq()); err != nil {
					return nil, err
				}
			}
		} else if err != nil {
			return nil, wrapPG(err)
		}
		res[i] = r
	}
	return res, nil
}

// appendTouch runs sqlAppendTouch and marks the inserted items.
func (s *Postgres) appendTouch(ctx context.Context, a *appendTouchArgs, items []AppendItem, res []AppendResult, inserted []bool) error {
	rows, err := s.pool.Query(ctx, sqlAppendTouch, a.convs, a.seqs, a.ids, a.senders, a.clientIDs,
		a.convTypes, a.peers, a.contentTypes, a.payloads, a.times, a.tConvs, a.tSeqs, a.tIDs, a.tUsers)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		conv    string
		seq, id int64
	)
	next := 0 // rows mostly come back in input order
	for rows.Next() {
		if err := rows.Scan(&conv, &seq, &id); err != nil {
			return err
		}
		for k := range items {
			i := (next + k) % len(items)
			m := items[i].Msg
			if !inserted[i] && res[i].Err == nil && m.GetSeq() == seq && m.GetMsgId() == id && m.GetConvId() == conv {
				inserted[i] = true
				next = i + 1
				break
			}
		}
	}
	return rows.Err()
}

// Range implements MessageStore.
func (s *Postgres) Range(ctx context.Context, convID string, fromSeq int64, limit int) (msgs []*protocol.Msg, more bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opRange, start, err) }()
	if err := validConv(convID); err != nil {
		return nil, false, err
	}
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	limit = rangeLimit(limit)
	rows, err := s.pool.Query(ctx, sqlRange, convID, max(fromSeq, 0), limit+1)
	if err != nil {
		return nil, false, wrapPG(err)
	}
	defer rows.Close()
	for rows.Next() {
		if len(msgs) == limit {
			more = true
			break
		}
		m, err := scanMsg(rows)
		if err != nil {
			return nil, false, wrapPG(err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, false, wrapPG(err)
	}
	return msgs, more, nil
}

// SyncPage implements SyncPager: the range, the max seq and the user's
// read seq go to the server in one batch (one round trip).
func (s *Postgres) SyncPage(ctx context.Context, userID int64, convID string, fromSeq int64, limit int) (page SyncPage, err error) {
	start := time.Now()
	defer func() { s.m.done(opSyncPage, start, err) }()
	if err := validUserConv(userID, convID); err != nil {
		return SyncPage{}, err
	}
	if err := s.check(ctx); err != nil {
		return SyncPage{}, err
	}
	limit = rangeLimit(limit)
	b := &pgx.Batch{}
	b.Queue(sqlRange, convID, max(fromSeq, 0), limit+1)
	b.Queue(sqlMaxSeq, convID)
	b.Queue(sqlConversation, userID, convID)
	br := s.pool.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			page, err = SyncPage{}, wrapPG(cerr)
		}
	}()
	rows, err := br.Query()
	if err != nil {
		return SyncPage{}, wrapPG(err)
	}
	for rows.Next() {
		if len(page.Msgs) == limit {
			page.More = true
			break
		}
		m, err := scanMsg(rows)
		if err != nil {
			rows.Close()
			return SyncPage{}, wrapPG(err)
		}
		page.Msgs = append(page.Msgs, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return SyncPage{}, wrapPG(err)
	}
	if err := br.QueryRow().Scan(&page.MaxSeq); err != nil {
		return SyncPage{}, wrapPG(err)
	}
	var last int64
	if err := br.QueryRow().Scan(&last, &page.ReadSeq); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return SyncPage{}, wrapPG(err)
	}
	return page, nil
}

// MaxSeq implements MessageStore.
func (s *Postgres) MaxSeq(ctx context.Context, convID string) (seq int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opMaxSeq, start, err) }()
	if err := validConv(convID); err != nil {
		return 0, err
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	err = s.pool.QueryRow(ctx, sqlMaxSeq, convID).Scan(&seq)
	return seq, wrapPG(err)
}

// GetByClientID implements MessageStore.
func (s *Postgres) GetByClientID(ctx context.Context, sender int64, clientMsgID string) (m *protocol.Msg, err error) {
	start := time.Now()
	defer func() { s.m.done(opGetByClientID, start, err) }()
	if clientMsgID == "" || len(clientMsgID) > MaxClientMsgIDLen || !validText(clientMsgID) {
		return nil, fmt.Errorf("%w: client_msg_id must be 1..%d bytes", ErrInvalid, MaxClientMsgIDLen)
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	m, err = scanMsg(s.pool.QueryRow(ctx, sqlMsgByClient, sender, clientMsgID))
	return m, wrapPG(err)
}

// ---- conversation index ----

// sortedUnique returns a sorted copy of ids without duplicates. Sorting
// also makes concurrent statements lock rows in the same order.
func sortedUnique(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// Touch implements ConvIndex: one statement for all users.
func (s *Postgres) Touch(ctx context.Context, userIDs []int64, convID string, lastSeq int64) (err error) {
	start := time.Now()
	defer func() { s.m.done(opTouch, start, err) }()
	if err := validTouch(userIDs, convID, lastSeq); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(userIDs) == 0 {
		return nil
	}
	_, err = s.pool.Exec(ctx, sqlTouch, sortedUnique(userIDs), convID, lastSeq)
	return wrapPG(err)
}

// SetRead implements ConvIndex.
func (s *Postgres) SetRead(ctx context.Context, userID int64, convID string, readSeq int64) (read int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opSetRead, start, err) }()
	if err := validUserConv(userID, convID); err != nil {
		return 0, err
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	err = s.pool.QueryRow(ctx, sqlSetRead, userID, convID, readSeq).Scan(&read)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return read, wrapPG(err)
}

// SetDelivered implements ConvIndex.
func (s *Postgres) SetDelivered(ctx context.Context, userID int64, deviceKey, convID string, seq int64) (err error) {
	start := time.Now()
	defer func() { s.m.done(opSetDelivered, start, err) }()
	if err := validDelivered(userID, deviceKey, convID, seq); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	return wrapPG(s.delivered.set(ctx, deliveredMark{user: userID, device: deviceKey, conv: convID, seq: seq}))
}

func (s *Postgres) setDeliveredBatch(ctx context.Context, users []int64, devices, convs []string, seqs []int64) error {
	if len(users) == 1 {
		_, err := s.pool.Exec(ctx, sqlSetDelivered, users[0], devices[0], convs[0], seqs[0])
		return err
	}
	_, err := s.pool.Exec(ctx, sqlSetDeliveredBatch, users, devices, convs, seqs)
	return err
}

// Delivered implements ConvIndex.
func (s *Postgres) Delivered(ctx context.Context, userID int64, deviceKey string) (marks map[string]int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opDelivered, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	if err := validDeviceKey(deviceKey); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, sqlDelivered, userID, deviceKey)
	if err != nil {
		return nil, wrapPG(err)
	}
	defer rows.Close()
	marks = map[string]int64{}
	for rows.Next() {
		var conv string
		var seq int64
		if err := rows.Scan(&conv, &seq); err != nil {
			return nil, wrapPG(err)
		}
		marks[conv] = seq
	}
	return marks, wrapPG(rows.Err())
}

// Conversation implements ConvIndex.
func (s *Postgres) Conversation(ctx context.Context, userID int64, convID string) (st ConvState, err error) {
	start := time.Now()
	defer func() { s.m.done(opConversation, start, err) }()
	if err := validUserConv(userID, convID); err != nil {
		return ConvState{}, err
	}
	if err := s.check(ctx); err != nil {
		return ConvState{}, err
	}
	st.ConvID = convID
	err = s.pool.QueryRow(ctx, sqlConversation, userID, convID).Scan(&st.LastSeq, &st.ReadSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return ConvState{}, ErrNotFound
	}
	if err != nil {
		return ConvState{}, wrapPG(err)
	}
	return st, nil
}

// Conversations implements ConvIndex: the cursors are joined in SQL, so only
// the conversations that moved come back.
func (s *Postgres) Conversations(ctx context.Context, userID int64, cursors map[string]int64) (out []ConvState, err error) {
	start := time.Now()
	defer func() { s.m.done(opConversations, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	if err := validBatch("cursors", len(cursors)); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	if cursors == nil {
		rows, err = s.pool.Query(ctx, sqlAllConversations, userID)
	} else {
		convs := make([]string, 0, len(cursors))
		seqs := make([]int64, 0, len(cursors))
		for c, seq := range cursors {
			convs = append(convs, c)
			seqs = append(seqs, seq)
		}
		rows, err = s.pool.Query(ctx, sqlConversations, userID, convs, seqs)
	}
	if err != nil {
		return nil, wrapPG(err)
	}
	defer rows.Close()
	for rows.Next() {
		var st ConvState
		if err := rows.Scan(&st.ConvID, &st.LastSeq, &st.ReadSeq); err != nil {
			return nil, wrapPG(err)
		}
		out = append(out, st)
	}
	return out, wrapPG(rows.Err())
}

// ---- groups ----

// CreateGroup implements GroupStore.
func (s *Postgres) CreateGroup(ctx context.Context, g Group) (out Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opCreateGroup, start, err) }()
	if err := validNewGroup(g); err != nil {
		return Group{}, err
	}
	if err := s.check(ctx); err != nil {
		return Group{}, err
	}
	if g.CreatedAt == 0 {
		g.CreatedAt = time.Now().UnixMilli()
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = g
		if g.ID != 0 {
			err := tx.QueryRow(ctx, sqlNewGroupID, g.ID, g.Name, g.Owner, g.CreatedAt).Scan(&out.ID)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrExists
			}
			if err != nil {
				return err
			}
		} else {
			// The identity sequence may hit ids created explicitly: skip them.
			for range maxAllocTries {
				err := tx.QueryRow(ctx, sqlNewGroup, g.Name, g.Owner, g.CreatedAt).Scan(&out.ID)
				if err == nil {
					break
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return err
				}
			}
			if out.ID == 0 {
				return fmt.Errorf("no free group id after %d tries", maxAllocTries)
			}
		}
		_, err := tx.Exec(ctx, sqlAddMembers, out.ID, []int64{out.Owner}, out.CreatedAt)
		return err
	})
	if err != nil {
		return Group{}, wrapPG(err)
	}
	return out, nil
}

// Group implements GroupStore.
func (s *Postgres) Group(ctx context.Context, groupID int64) (g Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opGroup, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return Group{}, err
	}
	if err := s.check(ctx); err != nil {
		return Group{}, err
	}
	err = s.pool.QueryRow(ctx, sqlGroup, groupID).Scan(&g.ID, &g.Name, &g.Owner, &g.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Group{}, ErrNotFound
	}
	if err != nil {
		return Group{}, wrapPG(err)
	}
	return g, nil
}

// changeMembers runs sqlAddMembers or sqlRemoveMembers.
func (s *Postgres) changeMembers(ctx context.Context, q string, groupID int64, userIDs []int64, args ...any) (int, error) {
	if err := validMembers(groupID, userIDs); err != nil {
		return 0, err
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var groups, n int
	err := s.pool.QueryRow(ctx, q, append([]any{groupID, sortedUnique(userIDs)}, args...)...).Scan(&groups, &n)
	if err != nil {
		return 0, wrapPG(err)
	}
	if groups == 0 {
		return 0, ErrNotFound
	}
	return n, nil
}

// AddMembers implements GroupStore.
func (s *Postgres) AddMembers(ctx context.Context, groupID int64, userIDs []int64) (added int, err error) {
	start := time.Now()
	defer func() { s.m.done(opAddMembers, start, err) }()
	return s.changeMembers(ctx, sqlAddMembers, groupID, userIDs, time.Now().UnixMilli())
}

// RemoveMembers implements GroupStore.
func (s *Postgres) RemoveMembers(ctx context.Context, groupID int64, userIDs []int64) (removed int, err error) {
	start := time.Now()
	defer func() { s.m.done(opRemoveMembers, start, err) }()
	return s.changeMembers(ctx, sqlRemoveMembers, groupID, userIDs)
}

// Members implements GroupStore.
func (s *Postgres) Members(ctx context.Context, groupID int64) (users []int64, err error) {
	start := time.Now()
	defer func() { s.m.done(opMembers, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, sqlMembers, groupID)
	if err != nil {
		return nil, wrapPG(err)
	}
	users, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, wrapPG(err)
	}
	if len(users) > 0 {
		return users, nil
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, sqlGroupExists, groupID).Scan(&exists); err != nil {
		return nil, wrapPG(err)
	}
	if !exists {
		return nil, ErrNotFound
	}
	return nil, nil
}

// IsMember implements GroupStore.
func (s *Postgres) IsMember(ctx context.Context, groupID, userID int64) (ok bool, err error) {
	start := time.Now()
	defer func() { s.m.done(opIsMember, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return false, err
	}
	if err := validUser(userID); err != nil {
		return false, err
	}
	if err := s.check(ctx); err != nil {
		return false, err
	}
	err = s.pool.QueryRow(ctx, sqlIsMember, groupID, userID).Scan(&ok)
	return ok, wrapPG(err)
}

// MemberCount implements GroupStore.
func (s *Postgres) MemberCount(ctx context.Context, groupID int64) (n int, err error) {
	start := time.Now()
	defer func() { s.m.done(opMemberCount, start, err) }()
	if err := validGroupID(groupID); err != nil {
		return 0, err
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, sqlMemberCount, groupID).Scan(&exists, &n); err != nil {
		return 0, wrapPG(err)
	}
	if !exists {
		return 0, ErrNotFound
	}
	return n, nil
}

// Groups implements GroupStore.
func (s *Postgres) Groups(ctx context.Context, userID int64) (out []Group, err error) {
	start := time.Now()
	defer func() { s.m.done(opGroups, start, err) }()
	if err := validUser(userID); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, sqlGroups, userID)
	if err != nil {
		return nil, wrapPG(err)
	}
	out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Group, error) {
		var g Group
		err := r.Scan(&g.ID, &g.Name, &g.Owner, &g.CreatedAt)
		return g, err
	})
	if err != nil {
		return nil, wrapPG(err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
