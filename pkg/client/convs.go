package client

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// syncCursorsField and syncAfterField are the field numbers of
// Sync.cursors and Sync.after_conv_id.
const (
	syncCursorsField = 4
	syncAfterField   = 5
)

// A missing seq above the server's settled_seq may still be in flight
// (allocated by a concurrent send, not stored yet): the client waits
// unsettledRetry and pulls again, and only gives up on it after
// Config.GapWait (a server that never settles it is broken or old).
const unsettledRetry = 500 * time.Millisecond

// convState is the receive side of one conversation. contig is the highest
// seq such that every seq up to it was delivered or skipped; buf holds
// messages above contig+1 until the gap below them is filled.
type convState struct {
	contig  int64
	acked   int64 // contig last sent in a delivered ack
	target  int64 // highest seq known to exist
	buf     map[int64]*protocol.Msg
	pulling bool
	pullSeq int32
	pullAt  time.Time
	retries int    // pulls resent for lack of a reply
	limit   int32  // page size; halved when a page is too big (0: SyncLimit)
	active  uint64 // Client.activity when contig last moved
	// movedEpoch and ackedEpoch are the Client.ackEpoch when contig last
	// moved and when its last delivered ack was sent.
	movedEpoch, ackedEpoch uint64
	// gapSince is when the conversation was last seen with a gap and no
	// pull, counting from its last progress (zero: no such gap).
	gapSince time.Time
	// lagSeq is the top seq missing when the device's own message opened
	// a gap, and lagFrom when: its push arriving (even after a pull
	// delivered it) measures how far pushes run behind ACKs (0: none).
	lagSeq  int64
	lagFrom time.Time
	// repullAt is when to pull an unsettled gap again (zero: not waiting);
	// unsettledSince is when the client started waiting for it.
	repullAt       time.Time
	unsettledSince time.Time
}

type syncReq struct {
	conv    string // "" for the cursor sync
	seq     int32
	at      time.Time
	retries int
}

type outFrame struct {
	op, seq int32
	body    []byte
}

// accept takes one message, appends the messages that became deliverable
// to out in seq order, and reports whether m was a duplicate.
func (st *convState) accept(m *protocol.Msg, limit int, out []*protocol.Msg) (_ []*protocol.Msg, dup bool) {
	if m.Seq <= st.contig {
		return out, true
	}
	if _, ok := st.buf[m.Seq]; ok {
		return out, true
	}
	st.target = max(st.target, m.Seq)
	if m.Seq == st.contig+1 {
		st.contig = m.Seq
		return st.drain(append(out, m)), false
	}
	if len(st.buf) < limit {
		if st.buf == nil {
			st.buf = make(map[int64]*protocol.Msg)
		}
		st.buf[m.Seq] = m
	} // else: dropped, a pull brings it back
	return out, false
}

func (st *convState) drain(out []*protocol.Msg) []*protocol.Msg {
	for {
		m, ok := st.buf[st.contig+1]
		if !ok {
			return out
		}
		delete(st.buf, st.contig+1)
		st.contig++
		out = append(out, m)
	}
}

// jumpTo moves contig to at least hi: buffered messages up to hi are
// delivered, missing seqs up to hi are skipped (the server said it has
// nothing for them).
func (st *convState) jumpTo(hi int64, out []*protocol.Msg) ([]*protocol.Msg, int64) {
	var skipped int64
	for st.contig < hi {
		if m, ok := st.buf[st.contig+1]; ok {
			delete(st.buf, st.contig+1)
			st.contig++
			out = append(out, m)
			continue
		}
		next := hi + 1
		for seq := range st.buf {
			if seq > st.contig && seq < next {
				next = seq
			}
		}
		skipped += next - 1 - st.contig
		st.contig = next - 1
	}
	return st.drain(out), skipped
}

func (st *convState) maxBuffered() int64 {
	var hi int64
	for seq := range st.buf {
		hi = max(hi, seq)
	}
	return hi
}

// Cursors returns the highest contiguous seq held per conversation, for the
// app to persist and hand back in Config.Cursors. A cursor moves when its
// messages are queued on Events.
func (c *Client) Cursors() map[string]int64 {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	out := make(map[string]int64, len(c.convs))
	for id, st := range c.convs {
		out[id] = st.contig
	}
	return out
}

type convMove struct {
	id     string
	st     *convState
	before int64 // contig before the reply
	cursor int64 // cursorLocked before the reply
}

// cursorLocked is the cursor a cursor sync sends for st: its contiguous
// seq, or its target while a pull is fetching the rest.
func (st *convState) cursorLocked() int64 {
	if st.pulling {
		return max(st.contig, st.target)
	}
	return st.contig
}

// touchLocked records that st moved, for the cursor order of the next sync.
func (c *Client) touchLocked(st *convState, before int64) {
	if st.contig > before {
		c.activity++
		st.active = c.activity
		st.movedEpoch = c.ackEpoch
	}
}

func (c *Client) convLocked(id string) *convState {
	st := c.convs[id]
	if st == nil {
		st = &convState{}
		c.convs[id] = st
	}
	return st
}

func (c *Client) startPullLocked(conv string, st *convState) outFrame {
	seq := c.nextSeq()
	now := time.Now()
	st.pulling, st.pullSeq, st.pullAt = true, seq, now
	st.gapSince = time.Time{}
	c.syncs[seq] = syncReq{conv: conv, seq: seq, at: now}
	if st.limit <= 0 {
		st.limit = c.cfg.SyncLimit
	}
	body, _ := proto.Marshal(&protocol.Sync{ConvId: conv, FromSeq: st.contig, Limit: st.limit})
	c.m.inc(mPulls)
	return outFrame{op: protocol.OpSync, seq: seq, body: body}
}

// deliver emits msgs, which already count in their conversations' cursors.
// When the client stops before all are emitted, the cursors go back below
// the first message of each conversation the app did not get, so Cursors
// (saved by the app for its next connection) never covers a message the
// app never saw: the next connection's sync brings it.
func (c *Client) deliver(msgs []*protocol.Msg) {
	for i, m := range msgs {
		if !c.emit(Message{m}) {
			c.m.add(mReceived, i)
			c.convMu.Lock()
			for _, m := range msgs[i:] {
				if st := c.convs[m.ConvId]; st != nil && st.contig >= m.Seq {
					st.contig = m.Seq - 1
				}
			}
			c.convMu.Unlock()
			return
		}
	}
	c.m.add(mReceived, len(msgs))
}

func (c *Client) sendAll(s *session, out []outFrame) {
	for _, f := range out {
		if s.write(f.op, f.seq, f.body) != nil {
			return
		}
	}
}

// Adaptive gap grace: a gap is given twice the recent push lag (an
// exponentially weighted mean over 1/lagWeight), never less than
// Config.GapGrace and never more than maxGraceFactor times it.
const (
	lagWeight      = 8
	lagGraceFactor = 2
	maxGraceFactor = 8
)

// handlePush takes a message pushed by the server, or (own) the device's
// own message completed by its ACK.
func (c *Client) handlePush(s *session, m *protocol.Msg, own bool) {
	c.convMu.Lock()
	st := c.convLocked(m.ConvId)
	before := st.contig
	if st.lagSeq != 0 && !own && m.Seq >= st.lagSeq {
		if m.Seq == st.lagSeq {
			c.noteLagLocked(time.Since(st.lagFrom))
		}
		st.lagSeq = 0
	}
	msgs, dup := st.accept(m, c.cfg.ReorderLimit, s.scratch[:0])
	c.touchLocked(st, before)
	if own && st.lagSeq == 0 && st.contig < m.Seq-1 {
		top := m.Seq - 1
		for _, ok := st.buf[top]; ok && top > st.contig; _, ok = st.buf[top] {
			top--
		}
		st.lagSeq, st.lagFrom = top, time.Now()
	}
	var out []outFrame
	if c.gapDueLocked(st, before) {
		out = append(out, c.startPullLocked(m.ConvId, st))
	}
	c.convMu.Unlock()
	if dup {
		c.m.inc(mDuplicates)
	}
	c.deliver(msgs)
	clear(msgs)
	s.scratch = msgs[:0]
	c.sendAll(s, out)
}

// gapDueLocked reports whether st, just given a message (contig was
// before), has a gap to pull now. A new gap, or one that made progress, is
// given GapGrace to fill by itself; the gap timer (maintainLoop) pulls it
// when it does not.
func (c *Client) gapDueLocked(st *convState, before int64) bool {
	if st.contig >= st.target || st.pulling {
		st.gapSince = time.Time{}
		return false
	}
	now := time.Now()
	if now.Before(st.repullAt) {
		return false // waiting for an unsettled seq; retryPulls pulls it
	}
	grace := c.gapGraceLocked()
	if grace <= 0 {
		return true
	}
	if st.gapSince.IsZero() || st.contig > before {
		st.gapSince = now
		c.armGapTimerLocked(now.Add(grace))
		return false
	}
	return now.Sub(st.gapSince) >= grace
}

// noteLagLocked adds one push lag sample.
func (c *Client) noteLagLocked(d time.Duration) {
	c.pushLag += (d - c.pushLag) / lagWeight
}

// gapGraceLocked is how long a gap may go without progress before it is
// pulled: lagGraceFactor times the push lag, within [GapGrace,
// maxGraceFactor*GapGrace]; 0 (pull at once) when GapGrace is.
func (c *Client) gapGraceLocked() time.Duration {
	if c.cfg.GapGrace <= 0 {
		return 0
	}
	return min(max(lagGraceFactor*c.pushLag, c.cfg.GapGrace), maxGraceFactor*c.cfg.GapGrace)
}

// armGapTimerLocked makes the gap timer fire at due at the latest.
func (c *Client) armGapTimerLocked(due time.Time) {
	if !c.gapDue.IsZero() && !due.Before(c.gapDue) {
		return
	}
	c.gapDue = due
	select {
	case c.gapWake <- struct{}{}:
	default: // a wake-up is already pending; it reads gapDue
	}
}

// nextGapDue is when the gap timer should fire (zero: not armed).
func (c *Client) nextGapDue() time.Time {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	return c.gapDue
}

// pullStuckGaps pulls every gap that made no progress for GapGrace and
// re-arms the gap timer for the others.
func (c *Client) pullStuckGaps(s *session) {
	now := time.Now()
	var out []outFrame
	c.convMu.Lock()
	c.gapDue = time.Time{}
	for id, st := range c.convs {
		if st.gapSince.IsZero() {
			continue
		}
		if st.pulling || st.contig >= st.target {
			st.gapSince = time.Time{}
			continue
		}
		if due := st.gapSince.Add(c.gapGraceLocked()); now.Before(due) {
			c.armGapTimerLocked(due)
			continue
		}
		if now.Before(st.repullAt) {
			st.gapSince = time.Time{} // retryPulls pulls it
			continue
		}
		out = append(out, c.startPullLocked(id, st))
	}
	c.convMu.Unlock()
	c.sendAll(s, out)
}

func (c *Client) handleNotify(s *session, n *protocol.MsgNotify) {
	c.convMu.Lock()
	st := c.convLocked(n.ConvId)
	st.target = max(st.target, n.MaxSeq)
	var out []outFrame
	if st.contig < st.target && !st.pulling {
		out = append(out, c.startPullLocked(n.ConvId, st))
	}
	c.convMu.Unlock()
	c.sendAll(s, out)
}

func (c *Client) handleSyncReply(s *session, seq int32, r *protocol.SyncReply) {
	if r.Status != protocol.Status_STATUS_OK {
		se := &StatusError{Op: protocol.OpSyncReply, Status: r.Status, Reason: r.Reason}
		if !se.Retryable() {
			c.abandonSync(seq)
		} // else: the pull stays outstanding and is retried after SendTimeout
		c.emit(Error{Err: se})
		return
	}
	var (
		msgs    []*protocol.Msg
		out     []outFrame
		errs    []error
		dups    int
		skipped int64
		moved   []convMove
	)
	c.convMu.Lock()
	req, known := c.syncs[seq]
	delete(c.syncs, seq)
	isCursor := c.cursorSync.seq != 0 && c.cursorSync.seq == seq
	if isCursor {
		c.cursorSync = syncReq{}
	}
	lastUnsent := "" // the last conversation in the reply the Sync had no cursor for
	for _, cm := range r.Convs {
		if cm.ConvId == "" {
			continue // malformed; nothing to attach it to
		}
		if isCursor {
			if _, sent := c.cursorSent[cm.ConvId]; !sent {
				lastUnsent = max(lastUnsent, cm.ConvId)
			}
		}
		st := c.convLocked(cm.ConvId)
		before, cursor := st.contig, st.cursorLocked()
		perConv := known && req.conv == cm.ConvId && st.pulling && st.pullSeq == seq
		// A cursor sync answers a conversation unless a pull of its own is
		// in flight (that pull carries on) or the round carried a cursor
		// above what the client holds: built while a pull was fetching up
		// to its target, and that pull ended short. The server vouched
		// only for seqs above the cursor it got, so the gap below it is
		// pulled, never skipped.
		sentAbove := isCursor && c.cursorSent[cm.ConvId] > before
		answers := perConv || (isCursor && !st.pulling && !sentAbove)
		var last int64
		for _, m := range cm.Msgs {
			if m.ConvId == "" {
				m.ConvId = cm.ConvId
			}
			last = max(last, m.Seq)
			var dup bool
			msgs, dup = st.accept(m, c.cfg.ReorderLimit, msgs)
			if dup {
				dups++
			}
		}
		st.target = max(st.target, cm.MaxSeq)
		moved = append(moved, convMove{cm.ConvId, st, before, cursor})
		if !answers {
			// A pull waiting for an unsettled seq (repullAt) comes anyway.
			if sentAbove && !st.pulling && st.repullAt.IsZero() && st.contig < st.target {
				out = append(out, c.startPullLocked(cm.ConvId, st))
			}
			continue
		}
		st.pulling = false
		st.retries = 0
		if perConv {
			st.limit = min(st.limit*2, c.cfg.SyncLimit) // recover after a halving
		}
		// Missing seqs up to settled_seq will never exist (a seq jump or
		// an abandoned send); anything missing above it may be in flight.
		var n int64
		msgs, n = st.jumpTo(min(cm.SettledSeq, max(cm.MaxSeq, last)), msgs)
		skipped += n
		progressed := st.contig > before
		if progressed {
			st.unsettledSince = time.Time{}
		}
		if !cm.More && st.contig >= st.target {
			st.unsettledSince, st.repullAt = time.Time{}, time.Time{}
			continue
		}
		if cm.More && progressed {
			out = append(out, c.startPullLocked(cm.ConvId, st)) // next page
			continue
		}
		// Stuck below an unsettled seq (it may be in flight: a push may
		// bring it), or nothing more yet: pull again later. Only GapWait
		// without progress gives the seq up — never a count of quick
		// replies, which would skip a message that is still being stored.
		now := time.Now()
		if st.unsettledSince.IsZero() {
			st.unsettledSince = now
		}
		if now.Sub(st.unsettledSince) < c.cfg.GapWait {
			st.repullAt = now.Add(unsettledRetry)
			continue
		}
		errs = append(errs, fmt.Errorf("%w: conversation %q: seqs %d..%d", ErrGapUnfilled, cm.ConvId, st.contig+1, st.target))
		var gone int64
		msgs, gone = st.jumpTo(st.maxBuffered(), msgs)
		skipped += gone
		st.target = st.contig
		st.unsettledSince, st.repullAt = time.Time{}, time.Time{}
	}
	if isCursor && c.cursorSynced == nil {
		c.cursorSynced = make(map[string]struct{})
	}
	advanced := false
	for _, mv := range moved {
		c.touchLocked(mv.st, mv.before)
		advanced = advanced || mv.st.cursorLocked() > mv.cursor
		if isCursor && mv.st.cursorLocked() >= mv.st.target {
			c.cursorSynced[mv.id] = struct{}{} // caught up, or its pull is
		}
	}
	if isCursor && lastUnsent != "" {
		// The server lists the conversations the Sync has cursors for
		// before the others (by id): every one of them that moved is in
		// this reply, so those not in it are up to date. The next round
		// sends the cursors that did not fit in this one first, and asks
		// for the conversations without a cursor after the last one here.
		if lastUnsent > c.cursorAfter {
			c.cursorAfter = lastUnsent
			advanced = true
		}
		in := make(map[string]struct{}, len(r.Convs))
		for _, cm := range r.Convs {
			in[cm.ConvId] = struct{}{}
		}
		for id := range c.cursorSent {
			if _, ok := in[id]; ok {
				continue
			}
			if _, ok := c.cursorSynced[id]; !ok {
				c.cursorSynced[id] = struct{}{}
				advanced = true
			}
		}
	}
	// A cursor sync reply is capped by the server (in conversations and
	// bytes); more_convs says it left some out: ask again with the
	// advanced cursors (conversations being pulled are excluded by their
	// targets). Every round must advance a cursor, show a conversation up
	// to date or move after_conv_id — each is bounded, so the rounds end;
	// one that did none of these would get the same reply again: stop and
	// report it (what was left out catches up on its next push or notice,
	// or on the next connection).
	if isCursor && r.MoreConvs {
		if advanced {
			out = append(out, c.cursorSyncLocked())
			c.m.inc(mCursorRounds)
		} else {
			errs = append(errs, fmt.Errorf("%w: %d conversations in the reply", ErrSyncStalled, len(r.Convs)))
		}
	}
	c.convMu.Unlock()
	c.m.add(mDuplicates, dups)
	c.m.add(mSkipped, int(skipped))
	c.deliver(msgs)
	for _, err := range errs {
		c.emit(Error{Err: err})
	}
	c.sendAll(s, out)
}

// startCursorSync asks for every conversation that moved past the cursors;
// it is sent on every new connection.
func (c *Client) startCursorSync(s *session) {
	c.convMu.Lock()
	c.cursorSent, c.cursorSynced, c.cursorAfter = nil, make(map[string]struct{}), ""
	f := c.cursorSyncLocked()
	c.convMu.Unlock()
	c.sendAll(s, []outFrame{f})
}

// cursorSyncOverhead is room left in MaxBody for the Sync fields other
// than the cursors and after_conv_id.
const cursorSyncOverhead = 16

// The order of the cursors of a cursor sync round: not yet shown up to
// date and carried by the previous round, not yet shown up to date, shown
// up to date by an earlier round of this connection.
const (
	cursorRankSent = iota
	cursorRankUnsent
	cursorRankSynced
)

func (c *Client) cursorSyncLocked() outFrame {
	type entry struct {
		cur    *protocol.Cursor
		rank   int // cursorRank*
		active uint64
	}
	entries := make([]entry, 0, len(c.convs))
	for id, st := range c.convs {
		rank := cursorRankSent
		if _, ok := c.cursorSynced[id]; ok {
			rank = cursorRankSynced
		} else if _, ok := c.cursorSent[id]; !ok {
			rank = cursorRankUnsent
		}
		// While a pull is fetching the rest, the cursor is its target.
		entries = append(entries, entry{&protocol.Cursor{ConvId: id, Seq: st.cursorLocked()}, rank, st.active})
	}
	// The server's frame limit bounds the cursors of one Sync. Those not
	// shown up to date by an earlier round of this connection go first
	// (the ones the last round carried, then the others), the most
	// recently active first; the server lists the conversations without
	// a cursor after the others, from after_conv_id on.
	slices.SortFunc(entries, func(a, b entry) int {
		if a.rank != b.rank {
			return cmp.Compare(a.rank, b.rank)
		}
		return cmp.Compare(b.active, a.active)
	})
	sync := &protocol.Sync{Limit: c.cfg.SyncLimit, Cursors: make([]*protocol.Cursor, 0, len(entries)), AfterConvId: c.cursorAfter}
	size := cursorSyncOverhead
	if c.cursorAfter != "" {
		size += protowire.SizeTag(syncAfterField) + protowire.SizeBytes(len(c.cursorAfter))
	}
	c.cursorSent = make(map[string]int64, len(entries))
	for _, e := range entries {
		n := protowire.SizeTag(syncCursorsField) + protowire.SizeBytes(proto.Size(e.cur))
		if size+n > c.cfg.MaxBody {
			break
		}
		size += n
		sync.Cursors = append(sync.Cursors, e.cur)
		c.cursorSent[e.cur.ConvId] = e.cur.Seq
	}
	seq := c.nextSeq()
	c.cursorSync = syncReq{seq: seq, at: time.Now()}
	body, _ := proto.Marshal(sync)
	return outFrame{op: protocol.OpSync, seq: seq, body: body}
}

// resetPulls forgets the pulls of a connection that ended; the next
// connection's cursor sync covers them.
func (c *Client) resetPulls() {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	for _, st := range c.convs {
		st.pulling = false
		st.retries = 0
		st.repullAt = time.Time{}
		st.gapSince = time.Time{}
	}
	c.gapDue = time.Time{}
	clear(c.syncs)
	c.cursorSync = syncReq{}
}

// retryPulls resends pulls whose reply is overdue.
func (c *Client) retryPulls(s *session) {
	now := time.Now()
	var out []outFrame
	var errs []error
	c.convMu.Lock()
	for id, st := range c.convs {
		if !st.pulling && !st.repullAt.IsZero() && !now.Before(st.repullAt) {
			st.repullAt = time.Time{}
			if st.contig < st.target {
				out = append(out, c.startPullLocked(id, st))
			}
			continue
		}
		if !st.pulling || now.Sub(st.pullAt) < c.cfg.SendTimeout {
			continue
		}
		delete(c.syncs, st.pullSeq)
		if st.retries >= c.cfg.MaxResends {
			// The server does not answer Sync; the next gap, notice or
			// connection tries again.
			st.pulling, st.retries = false, 0
			errs = append(errs, fmt.Errorf("%w: pull of %q", ErrTimeout, id))
			continue
		}
		st.retries++
		out = append(out, c.startPullLocked(id, st))
	}
	if cs := c.cursorSync; cs.seq != 0 && now.Sub(cs.at) >= c.cfg.SendTimeout {
		if cs.retries >= c.cfg.MaxResends {
			c.cursorSync = syncReq{}
			errs = append(errs, fmt.Errorf("%w: sync of all conversations", ErrTimeout))
		} else {
			out = append(out, c.cursorSyncLocked())
			c.cursorSync.retries = cs.retries + 1
		}
	}
	c.convMu.Unlock()
	for _, err := range errs {
		c.emit(Error{Err: err})
	}
	c.sendAll(s, out)
}

// pendingAcks returns the delivered acks due, one per conversation whose
// contiguous seq moved since its last ack: a conversation that did not
// move during the last AckInterval (it went idle) is acked at once, one
// that keeps moving once every AckMaxDelay. all acks every conversation
// that moved (Close).
func (c *Client) pendingAcks(all bool) []*protocol.MsgDeliveredAck {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	epoch := c.ackEpoch
	c.ackEpoch++
	var acks []*protocol.MsgDeliveredAck
	for id, st := range c.convs {
		if st.contig <= st.acked {
			continue
		}
		idle := st.movedEpoch < epoch
		if !all && !idle && epoch-st.ackedEpoch < c.ackMaxEpochs {
			continue
		}
		st.acked, st.ackedEpoch = st.contig, epoch
		acks = append(acks, &protocol.MsgDeliveredAck{ConvId: id, Seq: st.contig})
	}
	return acks
}

// handleOversize deals with a frame dropped for exceeding MaxInboundBody:
// a pull is asked for again with half the page; a single message too big
// to receive is skipped; an oversized cursor sync falls back to pulling
// every known conversation.
func (c *Client) handleOversize(s *session, e *OversizeError) {
	var (
		out     []outFrame
		errs    = []error{e}
		skipped int64
		msgs    []*protocol.Msg
	)
	if e.Seq != 0 && s.failReply(e.Seq, e) {
		// The reply to a Request: it fails at once (no retry would fit).
		c.emit(Error{Err: e})
		return
	}
	c.convMu.Lock()
	if e.Op == protocol.OpSyncReply {
		req, known := c.syncs[e.Seq]
		delete(c.syncs, e.Seq)
		switch {
		case known && req.conv != "":
			st := c.convs[req.conv]
			if st == nil || !st.pulling || st.pullSeq != e.Seq {
				break
			}
			st.pulling = false
			if st.limit > 1 {
				st.limit /= 2
			} else {
				errs = append(errs, fmt.Errorf("%w: conversation %q seq %d is larger than MaxInboundBody; skipped", ErrTooLarge, req.conv, st.contig+1))
				var n int64
				msgs, n = st.jumpTo(st.contig+1, msgs)
				skipped += n
			}
			// The dropped page had messages: ask again.
			out = append(out, c.startPullLocked(req.conv, st))
		case c.cursorSync.seq == e.Seq:
			c.cursorSync = syncReq{}
			for id, st := range c.convs {
				if !st.pulling {
					out = append(out, c.startPullLocked(id, st))
				}
			}
		}
	}
	c.convMu.Unlock()
	c.m.add(mSkipped, int(skipped))
	c.deliver(msgs)
	for _, err := range errs {
		c.emit(Error{Err: err})
	}
	c.sendAll(s, out)
}

// abandonSync drops the pull (or cursor sync) seq answers after a
// non-retryable status: asking again would get the same answer.
func (c *Client) abandonSync(seq int32) {
	c.convMu.Lock()
	defer c.convMu.Unlock()
	req, known := c.syncs[seq]
	delete(c.syncs, seq)
	if c.cursorSync.seq == seq {
		c.cursorSync = syncReq{}
	}
	if !known {
		return
	}
	if st := c.convs[req.conv]; st != nil && st.pulling && st.pullSeq == seq {
		st.pulling, st.retries = false, 0
		st.target = st.contig
	}
}
