package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/pkg/client"
	"github.com/prometheus/client_golang/prometheus"
)

// chat defaults.
const (
	defaultChatPairs     = 50
	defaultChatGroups    = 5
	defaultChatGroupSize = 5
	defaultChatRate      = 1000
	defaultChatCount     = 10000
	defaultChatDur       = 30 * time.Second
	defaultChatQuiet     = 10 * time.Second
	chatEventBuffer      = 4096
	chatContentType      = 1
	chatPayloadMin       = stampLen + 8 // stamp + sender index
	groupAPITimeout      = 10 * time.Second
)

// chatUser is one SDK client and what it received.
type chatUser struct {
	mid int64
	cl  *client.Client
	mu  sync.Mutex
	// per sender index: seen[j] for message j, and the highest j seen.
	seen map[int][]bool
	last map[int]int64
}

// chatSender is one (user, conversation) sending sequentially.
type chatSender struct {
	user      *chatUser
	to        client.Conversation
	receivers []*chatUser
	acked     []bool // acked[j]: message j was ACKed OK (only the sender's goroutine writes, read after)
}

// chatResult is the JSON result of `imbench chat`.
type chatResult struct {
	Scenario      string         `json:"scenario"`
	Transport     string         `json:"transport"`
	Pairs         int            `json:"pairs"`
	Groups        int            `json:"groups"`
	GroupSize     int            `json:"group_size"`
	Senders       int            `json:"senders"`
	Rate          float64        `json:"target_rate"`
	Sent          int64          `json:"sent"`
	Acked         int64          `json:"acked"`
	SendErrors    int64          `json:"send_errors"`
	SendSeconds   float64        `json:"send_seconds"`
	AckedPerSec   float64        `json:"acked_per_second"`
	AckLatency    LatencySummary `json:"ack_latency"`
	Expected      int64          `json:"expected_deliveries"`
	Delivered     int64          `json:"delivered"` // includes messages whose Send was cut at the end (stored or not)
	DeliverPerSec float64        `json:"delivered_per_second"`
	Lost          int64          `json:"lost"`
	Duplicated    int64          `json:"duplicated"`
	OutOfOrder    int64          `json:"out_of_order"`
	Disconnects   int64          `json:"disconnects"`
	Delivery      LatencySummary `json:"delivery_latency"`
	FirstError    string         `json:"first_error,omitempty"`
	// ClientOps are the SDK's frames to the server over the run (each one
	// comet -> logic round trip): MsgSend (with resends), Sync pulls and
	// delivered acks, in total and per ACKed message.
	ClientOps clientOps `json:"client_ops"`
}

// clientOps counts the SDK's requests to the server during a run.
type clientOps struct {
	Sends       float64 `json:"sends"`
	Resends     float64 `json:"resends"`
	Pulls       float64 `json:"pulls"`
	Acks        float64 `json:"delivered_acks"`
	PerMessage  float64 `json:"per_acked_message"`
	PullsPerMsg float64 `json:"pulls_per_acked_message"`
	AcksPerMsg  float64 `json:"acks_per_acked_message"`
}

// gatherClientOps reads the SDK counters registered in reg.
func gatherClientOps(reg *prometheus.Registry, acked int64) clientOps {
	var ops clientOps
	mfs, err := reg.Gather()
	if err != nil {
		return ops
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		v := mf.GetMetric()[0].GetCounter().GetValue()
		switch mf.GetName() {
		case "hubuim_client_sends_total":
			ops.Sends = v
		case "hubuim_client_resends_total":
			ops.Resends = v
		case "hubuim_client_pulls_total":
			ops.Pulls = v
		case "hubuim_client_delivered_acks_total":
			ops.Acks = v
		}
	}
	if acked > 0 {
		n := float64(acked)
		ops.PerMessage = (ops.Sends + ops.Resends + ops.Pulls + ops.Acks) / n
		ops.PullsPerMsg = ops.Pulls / n
		ops.AcksPerMsg = ops.Acks / n
	}
	return ops
}

func (o clientOps) String() string {
	return fmt.Sprintf("client ops: %.0f sends + %.0f resends + %.0f pulls + %.0f delivered acks = %.2f per ACKed message (pulls %.3f, acks %.3f)",
		o.Sends, o.Resends, o.Pulls, o.Acks, o.PerMessage, o.PullsPerMsg, o.AcksPerMsg)
}

// chatRun holds a run's shared counters.
type chatRun struct {
	ackLat, delLat       Histogram
	sent, acked, sendErr atomic.Int64
	reserved             atomic.Int64 // messages claimed by senders (bounded by -count)
	delivered, expected  atomic.Int64
	dup, ooo, disc       atomic.Int64
	lastDeliver          atomic.Int64
	firstErr             atomic.Value
}

func (r *chatRun) noteErr(err error) {
	r.firstErr.CompareAndSwap(nil, err.Error())
}

func runChat(ctx context.Context, args []string, c *common) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	pairs := fs.Int("pairs", defaultChatPairs, "1:1 pairs (both users send to each other)")
	groups := fs.Int("groups", defaultChatGroups, "groups (every member sends to the group)")
	gsize := fs.Int("group-size", defaultChatGroupSize, "members per group (>= 2)")
	rt := fs.Float64("rate", defaultChatRate, "messages per second over all senders (0: as fast as ACKs come)")
	count := fs.Int64("count", defaultChatCount, "messages at most, over all senders")
	dur := fs.Duration("duration", defaultChatDur, "send phase at most")
	size := fs.Int("size", chatPayloadMin, "payload bytes (>= 24)")
	quiet := fs.Duration("quiet", defaultChatQuiet, "after sending, wait this long without a delivery before counting losses")
	var tune sdkTuning
	fs.DurationVar(&tune.gapGrace, "gap-grace", 0, "SDK Config.GapGrace (0: the SDK default; negative: pull every gap at once)")
	fs.DurationVar(&tune.ackInterval, "ack-interval", 0, "SDK Config.AckInterval (0: the SDK default)")
	fs.DurationVar(&tune.ackMaxDelay, "ack-max-delay", 0, "SDK Config.AckMaxDelay (0: the SDK default)")
	ctx, cancel, err := c.parse(ctx, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *pairs < 0 || *groups < 0 || *pairs+*groups == 0 || (*groups > 0 && *gsize < 2) || *count <= 0 || *dur <= 0 {
		return errors.New("need -pairs or -groups, -group-size >= 2, positive -count and -duration")
	}
	run := &chatRun{}
	reg := prometheus.NewRegistry()
	if tune.metrics, err = client.NewMetrics(reg); err != nil {
		return err
	}
	users, senders, err := chatSetup(ctx, c, *pairs, *groups, *gsize, tune)
	defer func() {
		for _, u := range users {
			u.cl.Close()
		}
	}()
	if err != nil {
		return err
	}
	perSender := (*count + int64(len(senders)) - 1) / int64(len(senders))
	for _, s := range senders {
		s.acked = make([]bool, perSender)
	}

	// Receivers: one goroutine per user draining its events.
	recvCtx, stopRecv := context.WithCancel(context.Background())
	var recvWG sync.WaitGroup
	for _, u := range users {
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			u.receive(recvCtx, run, perSender)
		}()
	}

	// Senders: each sends its j-th message at start + (j*len(senders)+i)/rate.
	interval := time.Duration(0)
	if *rt > 0 {
		interval = time.Duration(float64(time.Second) / *rt)
	}
	sendCtx, stopSend := context.WithTimeout(ctx, *dur)
	defer stopSend()
	start := time.Now()
	var sendWG sync.WaitGroup
	for i, s := range senders {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			s.send(sendCtx, run, i, len(senders), perSender, *count, start, interval, *size)
		}()
	}
	sendWG.Wait()
	sendElapsed := time.Since(start)

	// Drain: until every ACKed message reached every receiver, or quiet.
	expected := int64(0)
	for _, s := range senders {
		for _, ok := range s.acked {
			if ok {
				expected += int64(len(s.receivers))
			}
		}
	}
	run.expected.Store(expected)
	waitDeliveries(ctx, run, senders, *quiet)
	stopRecv()
	for _, u := range users {
		u.cl.Close() // closes Events, ends the receivers
	}
	recvWG.Wait()

	lost := lostCount(senders)
	res := chatResult{
		Scenario: "chat", Transport: c.transport, Pairs: *pairs, Groups: *groups, GroupSize: *gsize,
		Senders: len(senders), Rate: *rt, Sent: run.sent.Load(), Acked: run.acked.Load(), SendErrors: run.sendErr.Load(),
		SendSeconds: sendElapsed.Seconds(), AckedPerSec: rate(run.acked.Load(), sendElapsed), AckLatency: run.ackLat.Summary(),
		Expected: expected, Delivered: run.delivered.Load(), Lost: lost, Duplicated: run.dup.Load(), OutOfOrder: run.ooo.Load(),
		Disconnects: run.disc.Load(), Delivery: run.delLat.Summary(),
		ClientOps: gatherClientOps(reg, run.acked.Load()),
	}
	if last := run.lastDeliver.Load(); last > 0 {
		res.DeliverPerSec = rate(res.Delivered, time.Unix(0, last).Sub(start))
	}
	res.FirstError, _ = run.firstErr.Load().(string)
	human := []string{
		fmt.Sprintf("chat: %d pairs + %d groups of %d = %d senders (%s); sent %d, acked %d in %.1fs = %.0f msg/s (target %.0f/s), send errors %d",
			*pairs, *groups, *gsize, len(senders), c.transport, res.Sent, res.Acked, res.SendSeconds, res.AckedPerSec, *rt, res.SendErrors),
		"send->ACK: " + res.AckLatency.String(),
		fmt.Sprintf("delivered %d/%d (%.0f/s); lost %d, duplicated %d, out of order %d; disconnects %d",
			res.Delivered, res.Expected, res.DeliverPerSec, res.Lost, res.Duplicated, res.OutOfOrder, res.Disconnects),
		"send->delivered: " + res.Delivery.String(),
		res.ClientOps.String(),
	}
	if res.FirstError != "" {
		human = append(human, "first error: "+res.FirstError)
	}
	if err := report(c.out, c.jsonOut, human, res); err != nil {
		return err
	}
	if res.Lost > 0 || res.Duplicated > 0 || res.OutOfOrder > 0 || res.SendErrors > 0 {
		return errFailed
	}
	return nil
}

// waitDeliveries polls until no ACKed message is missing at a receiver,
// nothing arrived for quiet, or ctx ended.
func waitDeliveries(ctx context.Context, run *chatRun, senders []*chatSender, quiet time.Duration) {
	const poll = 100 * time.Millisecond
	last, since := run.delivered.Load(), time.Now()
	for ctx.Err() == nil && lostCount(senders) > 0 {
		sleepCtx(ctx, poll)
		if n := run.delivered.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > quiet {
			return
		}
	}
}

// lostCount is the number of (ACKed message, receiver) pairs not delivered.
// Deliveries of messages whose Send was cut by the end of the send phase
// are not expected (they may or may not have been stored).
func lostCount(senders []*chatSender) int64 {
	lost := int64(0)
	for i, s := range senders {
		for _, r := range s.receivers {
			r.mu.Lock()
			got := r.seen[i]
			for j, ok := range s.acked {
				if ok && (j >= len(got) || !got[j]) {
					lost++
				}
			}
			r.mu.Unlock()
		}
	}
	return lost
}

// sdkTuning are the SDK settings of every chat client.
type sdkTuning struct {
	gapGrace, ackInterval, ackMaxDelay time.Duration
	metrics                            *client.Metrics
}

// chatSetup connects every user and creates the groups.
func chatSetup(ctx context.Context, c *common, pairs, groups, gsize int, tune sdkTuning) ([]*chatUser, []*chatSender, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := 2*pairs + groups*gsize
	users := make([]*chatUser, 0, n)
	var senders []*chatSender
	for i := range n {
		mid := c.midBase + int64(i)
		cl, err := client.New(client.Config{
			Addrs: []string{c.addr()}, Transport: c.transport, WSPath: c.wsPath, Mid: mid, Platform: "imbench",
			EventBuffer: chatEventBuffer, Logger: quiet,
			GapGrace: tune.gapGrace, AckInterval: tune.ackInterval, AckMaxDelay: tune.ackMaxDelay, Metrics: tune.metrics,
		})
		if err != nil {
			return users, nil, err
		}
		users = append(users, &chatUser{mid: mid, cl: cl, seen: map[int][]bool{}, last: map[int]int64{}})
	}
	// Connect with bounded concurrency.
	errs := make(chan error, n)
	sem := make(chan struct{}, defaultDialConcurrency)
	for _, u := range users {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- u.cl.Connect(ctx)
		}()
	}
	for range users {
		if err := <-errs; err != nil {
			return users, nil, fmt.Errorf("connect: %w", err)
		}
	}
	for k := range pairs {
		a, b := users[2*k], users[2*k+1]
		senders = append(senders,
			&chatSender{user: a, to: client.User(b.mid), receivers: []*chatUser{b}},
			&chatSender{user: b, to: client.User(a.mid), receivers: []*chatUser{a}})
	}
	for g := range groups {
		members := users[2*pairs+g*gsize : 2*pairs+(g+1)*gsize]
		mids := make([]int64, len(members))
		for i, m := range members {
			mids[i] = m.mid
		}
		gid, err := createGroup(ctx, c.httpURL, mids)
		if err != nil {
			return users, nil, err
		}
		for i, m := range members {
			others := make([]*chatUser, 0, len(members)-1)
			others = append(others, members[:i]...)
			others = append(others, members[i+1:]...)
			senders = append(senders, &chatSender{user: m, to: client.Group(gid), receivers: others})
		}
	}
	return users, senders, nil
}

// createGroup creates a group through the client HTTP API as its first
// member (insecure auth: the X-Hubuim-Mid header is trusted).
func createGroup(ctx context.Context, base string, mids []int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, groupAPITimeout)
	defer cancel()
	body, err := json.Marshal(map[string]any{"name": "imbench", "members": mids})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/im/v1/groups", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Hubuim-Mid", strconv.FormatInt(mids[0], 10))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("create group: %w", err)
	}
	defer resp.Body.Close()
	const maxReply = 64 << 10
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	var env struct {
		Code int `json:"code"`
		Data struct {
			GroupID  json.Number `json:"group_id"`
			GroupID2 json.Number `json:"groupId"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &env); err != nil || resp.StatusCode != http.StatusOK || env.Code != 0 {
		return 0, fmt.Errorf("create group: HTTP %d: %s", resp.StatusCode, data)
	}
	id := env.Data.GroupID
	if id == "" {
		id = env.Data.GroupID2
	}
	gid, err := id.Int64()
	if err != nil || gid <= 0 {
		return 0, fmt.Errorf("create group: no group id in %s", data)
	}
	return gid, nil
}

// send sends this sender's messages j = 0.. perSender-1 one at a time, the
// j-th not before start + (j*n+idx)*interval.
func (s *chatSender) send(ctx context.Context, run *chatRun, idx, n int, perSender, total int64, start time.Time, interval time.Duration, size int) {
	payload := make([]byte, max(size, chatPayloadMin))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for j := range perSender {
		if ctx.Err() != nil || run.reserved.Add(1) > total {
			return
		}
		if wait := time.Until(start.Add(time.Duration(j*int64(n)+int64(idx)) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		now := time.Now()
		putStamp(payload, now, uint64(j))
		binary.BigEndian.PutUint64(payload[stampLen:], uint64(idx))
		run.sent.Add(1)
		_, err := s.user.cl.Send(ctx, s.to, chatContentType, payload)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				run.sent.Add(-1) // cut by the end of the send phase: neither sent nor lost
				return
			}
			run.sendErr.Add(1)
			run.noteErr(err)
			continue
		}
		run.ackLat.Record(time.Since(now))
		run.acked.Add(1)
		s.acked[j] = true
	}
}

// receive drains the user's events until ctx ends or the client closes.
func (u *chatUser) receive(ctx context.Context, run *chatRun, perSender int64) {
	ev := u.cl.Events()
	for {
		var e client.Event
		var ok bool
		select {
		case <-ctx.Done():
			return
		case e, ok = <-ev:
			if !ok {
				return
			}
		}
		switch e := e.(type) {
		case client.Message:
			if e.Sender == u.mid {
				continue // own message echoed back
			}
			u.onMessage(run, e.Msg, perSender)
		case client.Disconnected:
			run.disc.Add(1)
		case client.Error:
			run.noteErr(e.Err)
		}
	}
}

func (u *chatUser) onMessage(run *chatRun, m *protocol.Msg, perSender int64) {
	now := time.Now()
	sent, j, err := readStamp(m.Payload)
	if err != nil || len(m.Payload) < chatPayloadMin || j >= uint64(perSender) {
		return // not ours
	}
	idx := int(binary.BigEndian.Uint64(m.Payload[stampLen:]))
	u.mu.Lock()
	seen := u.seen[idx]
	if seen == nil {
		seen = make([]bool, perSender)
		u.seen[idx] = seen
		u.last[idx] = -1
	}
	if seen[j] {
		u.mu.Unlock()
		run.dup.Add(1)
		return
	}
	seen[j] = true
	if int64(j) != u.last[idx]+1 {
		run.ooo.Add(1)
	}
	u.last[idx] = max(u.last[idx], int64(j))
	u.mu.Unlock()
	run.delLat.Record(now.Sub(sent))
	run.delivered.Add(1)
	run.lastDeliver.Store(now.UnixNano())
}
