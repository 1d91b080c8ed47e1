package comet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// Bodies steering streamLogic's answers.
const (
	bodyFail  = "fail"  // answered with InvalidArgument
	bodyHang  = "hang"  // never answered
	bodyBreak = "break" // the stream ends with Internal
)

// streamLogic serves ReceiveStream the way logic does (calls answered
// concurrently, in completion order) and counts streams and unary calls.
type streamLogic struct {
	fakeLogic
	unary  atomic.Int64
	opened atomic.Int64
	ended  atomic.Int64
	eofs   atomic.Int64 // streams the comet closed (CloseSend)
	calls  atomic.Int64
	live   atomic.Int64
	// refuse: this many calls are refused like a stopping logic does
	// (the stream then ends).
	refuse atomic.Int64
	// jitter delays a reply by its seq mod 5 ms: replies out of order.
	jitter bool
	// stall: the stream never reads (a logic that stopped reading).
	stall bool
	// closeAfter: after answering this many calls on a stream, ask the
	// comet to close its side (as a draining logic does); 0: never.
	closeAfter int
}

func (f *streamLogic) Receive(ctx context.Context, req *logic.ReceiveReq) (*logic.ReceiveReply, error) {
	f.unary.Add(1)
	return f.fakeLogic.Receive(ctx, req)
}

func (f *streamLogic) ReceiveStream(s logic.Logic_ReceiveStreamServer) error {
	f.opened.Add(1)
	f.live.Add(1)
	defer f.live.Add(-1)
	defer f.ended.Add(1)
	var (
		sendMu sync.Mutex
		wg     sync.WaitGroup
	)
	defer wg.Wait()
	if f.stall {
		<-s.Context().Done()
		return s.Context().Err()
	}
	answered := 0
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			f.eofs.Add(1)
			return nil
		}
		if err != nil {
			return err
		}
		f.calls.Add(1)
		if f.refuse.Add(-1) >= 0 {
			sendMu.Lock()
			_ = s.Send(&logic.ReceiveReply{CallId: req.GetCallId(), Refused: true, Code: uint32(codes.Unavailable), Message: "logic is stopping"})
			sendMu.Unlock()
			return nil
		}
		body := string(req.GetProto().GetBody())
		if body == bodyBreak {
			return status.Error(codes.Internal, "stream broken by the test")
		}
		if body == bodyHang {
			continue
		}
		if answered++; answered == f.closeAfter {
			// Answer it, then ask the comet to close its side.
			sendMu.Lock()
			_ = s.Send(&logic.ReceiveReply{CallId: req.GetCallId(), Proto: &protocol.Proto{Op: protocol.OpSendMsgReply, Seq: req.GetProto().GetSeq()}})
			_ = s.Send(&logic.ReceiveReply{Refused: true, Code: uint32(codes.Unavailable), Message: "logic is stopping"})
			sendMu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &logic.ReceiveReply{CallId: req.GetCallId()}
			switch body {
			case bodyFail:
				r.Code, r.Message = uint32(codes.InvalidArgument), "bad call"
			default:
				if f.jitter {
					time.Sleep(time.Duration(req.GetProto().GetSeq()%5) * time.Millisecond)
				}
				r.Proto = &protocol.Proto{Op: protocol.OpSendMsgReply, Seq: req.GetProto().GetSeq(), Body: []byte("echo:" + body)}
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = s.Send(r)
		}()
	}
}

func newTestMux(tb testing.TB, client logic.LogicClient, streams int) *receiveMux {
	tb.Helper()
	m := newReceiveMux(client, streams, slog.New(slog.DiscardHandler), prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"}))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		m.close(ctx)
	})
	return m
}

func muxCall(ctx context.Context, m *receiveMux, seq int32, body string) (*logic.ReceiveReply, error) {
	return m.Receive(ctx, &logic.ReceiveReq{Mid: 1, Key: "k", Proto: &protocol.Proto{Op: protocol.OpSendMsg, Seq: seq, Body: []byte(body)}})
}

// echoCall makes a call that must succeed within waitFor with the fake
// logic's echo of body, and returns its reply. what names it in failures.
func echoCall(t *testing.T, m *receiveMux, seq int32, body, what string) *logic.ReceiveReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := muxCall(ctx, m, seq, body)
	if err != nil || string(r.GetProto().GetBody()) != "echo:"+body {
		t.Fatalf("%s = %v, %v", what, r, err)
	}
	return r
}

// TestReceiveMuxStreams: concurrent calls share the mux's streams and each
// gets its own reply; a failed call carries logic's status; no unary call
// is made.
func TestReceiveMuxStreams(t *testing.T) {
	f := &streamLogic{jitter: true}
	m := newTestMux(t, startLogic(t, f), 3)
	var observed, observedFailed atomic.Int64
	m.observe = func(method string, _ time.Time, err error) {
		if method == logic.Logic_Receive_FullMethodName {
			observed.Add(1)
		}
		if status.Code(err) == codes.InvalidArgument {
			observedFailed.Add(1)
		}
	}
	const calls = 300
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			body := "m" + string(rune('a'+i%26))
			if i%50 == 0 {
				body = bodyFail
			}
			r, err := muxCall(ctx, m, int32(i), body)
			switch {
			case body == bodyFail:
				if status.Code(err) != codes.InvalidArgument {
					errs <- errors.New("failed call: " + status.Convert(err).String())
				}
			case err != nil:
				errs <- err
			case r.GetProto().GetSeq() != int32(i) || string(r.GetProto().GetBody()) != "echo:"+body:
				errs <- errors.New("reply of another call: " + r.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.unary.Load(); n != 0 {
		t.Errorf("unary calls = %d, want 0", n)
	}
	if n := f.opened.Load(); n != 3 {
		t.Errorf("streams opened = %d, want 3 (one per slot)", n)
	}
	if n := f.calls.Load(); n != calls {
		t.Errorf("calls on streams = %d, want %d", n, calls)
	}
	if n, nf := observed.Load(), observedFailed.Load(); n != calls || nf != calls/50 {
		t.Errorf("observed %d calls (%d failed), want %d (%d) as Receive", n, nf, calls, calls/50)
	}
}

// TestReceiveMuxFallback: a logic without ReceiveStream gets unary calls,
// including the call that found out.
func TestReceiveMuxFallback(t *testing.T) {
	f := &fakeLogic{}
	m := newTestMux(t, startLogic(t, f), 2)
	var observed atomic.Int64
	m.observe = func(string, time.Time, error) { observed.Add(1) }
	for i := range 5 {
		echoCall(t, m, int32(i), "x", fmt.Sprint("call ", i))
	}
	if !m.useUnary() {
		t.Fatal("mux did not switch to unary calls")
	}
	// After maxAge it tries a stream again (and falls back again).
	m.maxAge.Store(int64(10 * time.Millisecond))
	reset := time.Now().UnixNano()
	m.fallbackUntil.Store(reset)
	echoCall(t, m, 9, "x", "call after the fallback period")
	if again := m.fallbackUntil.Load(); again <= reset {
		t.Fatal("no new stream tried after the fallback period")
	}
	if n := observed.Load(); n != 0 {
		t.Fatalf("%d unary calls observed by the mux (the client interceptor does)", n)
	}
}

// TestReceiveMuxBrokenStream: calls in flight on a stream that breaks fail
// with Unavailable; the next call opens a new stream.
func TestReceiveMuxBrokenStream(t *testing.T) {
	f := &streamLogic{}
	m := newTestMux(t, startLogic(t, f), 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	hung := make(chan error, 1)
	go func() {
		_, err := muxCall(ctx, m, 1, bodyHang)
		hung <- err
	}()
	waitfor.Until(t, waitFor, "the hanging call reached logic", func() bool { return f.calls.Load() == 1 })
	if _, err := muxCall(ctx, m, 2, bodyBreak); status.Code(err) != codes.Unavailable {
		t.Fatalf("call that broke the stream: %v, want Unavailable", err)
	}
	if err := <-hung; status.Code(err) != codes.Unavailable {
		t.Fatalf("call in flight on the broken stream: %v, want Unavailable", err)
	}
	echoCall(t, m, 3, "again", "call after the break")
	if n := f.opened.Load(); n != 2 {
		t.Fatalf("streams opened = %d, want 2", n)
	}
}

// TestReceiveMuxTimeout: a call logic does not answer ends at its ctx; the
// stream keeps serving the others.
func TestReceiveMuxTimeout(t *testing.T) {
	f := &streamLogic{}
	m := newTestMux(t, startLogic(t, f), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := muxCall(ctx, m, 1, bodyHang)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("unanswered call: %v, want DeadlineExceeded", err)
	}
	for i := range 20 {
		if r := echoCall(t, m, int32(i), "y", "call after the timeout"); r.GetProto().GetSeq() != int32(i) {
			t.Fatalf("call %d after the timeout = %v", i, r)
		}
	}
	if n := f.opened.Load(); n != 1 {
		t.Fatalf("streams opened = %d, want 1", n)
	}
}

// TestReceiveMuxRenewsAgedStreams: an aged stream takes no new calls and
// is closed by the comet once answered; its slot opens a fresh one.
func TestReceiveMuxRenewsAgedStreams(t *testing.T) {
	f := &streamLogic{}
	m := newTestMux(t, startLogic(t, f), 1)
	m.maxAge.Store(int64(time.Nanosecond))
	for i := range 10 {
		if r := echoCall(t, m, int32(i), "z", "call on an aged stream"); r.GetProto().GetSeq() != int32(i) {
			t.Fatalf("call %d = %v", i, r)
		}
	}
	if n := f.opened.Load(); n != 10 {
		t.Fatalf("streams opened = %d, want 10 (one per call)", n)
	}
	waitfor.Until(t, waitFor, "retired streams closed by the comet", func() bool { return f.eofs.Load() == 9 })
	waitfor.Until(t, waitFor, "retired streams ended", func() bool { return f.live.Load() == 1 })
}

// TestReceiveMuxClose: close ends the streams and later calls fail.
func TestReceiveMuxClose(t *testing.T) {
	f := &streamLogic{}
	m := newReceiveMux(startLogic(t, f), 2, slog.New(slog.DiscardHandler), prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"}))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for i := range 4 {
		if _, err := muxCall(ctx, m, int32(i), "w"); err != nil {
			t.Fatal(err)
		}
	}
	m.close(ctx)
	if n, e := f.opened.Load(), f.eofs.Load(); n != 2 || e != 2 {
		t.Fatalf("streams opened %d, closed by the comet %d; want 2 and 2", n, e)
	}
	if _, err := muxCall(ctx, m, 9, "w"); status.Code(err) != codes.Unavailable {
		t.Fatalf("call after close: %v, want Unavailable", err)
	}
}

// TestReceiveMuxRefusedRetried: a call a stopping logic refused (not
// handled) goes again on a new stream.
func TestReceiveMuxRefusedRetried(t *testing.T) {
	f := &streamLogic{}
	f.refuse.Store(1)
	m := newTestMux(t, startLogic(t, f), 1)
	if r := echoCall(t, m, 7, "again", "refused then retried call"); r.GetProto().GetSeq() != 7 {
		t.Fatalf("refused then retried call = %v", r)
	}
	if n, c := f.opened.Load(), f.calls.Load(); n != 2 || c != 2 {
		t.Fatalf("streams opened %d, calls %d; want 2 and 2", n, c)
	}
	f.refuse.Store(receiveAttempts)
	if _, err := muxCall(t.Context(), m, 8, "x"); status.Code(err) != codes.Unavailable {
		t.Fatalf("call refused on every attempt: %v, want Unavailable", err)
	}
}

// TestReceiveMuxStalledLogic: calls to a logic that stopped reading end
// at their deadline even while their sends wait for flow control.
func TestReceiveMuxStalledLogic(t *testing.T) {
	f := &streamLogic{stall: true}
	m := newTestMux(t, startLogic(t, f), 1)
	big := strings.Repeat("x", 16<<10) // 40 of them: beyond the HTTP/2 window
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := muxCall(ctx, m, int32(i), big); err == nil {
				t.Errorf("call %d to a stalled logic succeeded", i)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("calls with a 300 ms deadline took %v", d)
	}
}

// TestReceiveMuxCloseRequest: logic asking the comet to close a stream's
// sending side (a draining logic) retires it; later calls use a new one.
func TestReceiveMuxCloseRequest(t *testing.T) {
	f := &streamLogic{closeAfter: 1}
	m := newTestMux(t, startLogic(t, f), 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := muxCall(ctx, m, 1, "a"); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, waitFor, "the stream closed by the comet", func() bool { return f.eofs.Load() == 1 })
	if r, err := muxCall(ctx, m, 2, "b"); err != nil || r.GetProto().GetSeq() != 2 {
		t.Fatalf("call after the close request = %v, %v", r, err)
	}
	if n := f.opened.Load(); n != 2 {
		t.Fatalf("streams opened = %d, want 2", n)
	}
}

// TestReceiveMuxExpiredCallerSparesTheStream: calls whose deadline has
// passed neither send nor break the stream the others wait on.
func TestReceiveMuxExpiredCallerSparesTheStream(t *testing.T) {
	f := &streamLogic{}
	m := newTestMux(t, startLogic(t, f), 1)
	hung := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := muxCall(ctx, m, 1, bodyHang)
		hung <- err
	}()
	waitfor.Until(t, waitFor, "the hanging call reached logic", func() bool { return f.calls.Load() == 1 })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 {
		if _, err := muxCall(done, m, int32(10+i), "late"); status.Code(err) != codes.Canceled {
			t.Fatalf("call with a cancelled ctx: %v, want Canceled", err)
		}
	}
	// A live call after them: on one ordered stream, logic has read every
	// earlier send once it answers this one.
	echoCall(t, m, 99, "live", "call after the expired ones")
	select {
	case err := <-hung:
		t.Fatalf("the call in flight ended: %v (an expired caller broke its stream)", err)
	default:
	}
	if n, c := f.opened.Load(), f.calls.Load(); n != 1 || c != 2 {
		t.Fatalf("streams opened %d, calls sent %d; want 1 and 2 (the expired calls are not sent)", n, c)
	}
}

// TestReceiveMuxAgedStreamDoesNotHoldCallers: replacing an aged stream
// whose sends are stuck (a logic that stopped reading) does not make a
// caller wait for another caller's deadline.
func TestReceiveMuxAgedStreamDoesNotHoldCallers(t *testing.T) {
	f := &streamLogic{stall: true}
	m := newTestMux(t, startLogic(t, f), 1)
	big := strings.Repeat("x", 16<<10)
	var wg sync.WaitGroup
	for i := range 40 { // beyond the HTTP/2 window: later sends block
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, _ = muxCall(ctx, m, int32(i), big)
		})
	}
	time.Sleep(200 * time.Millisecond)     // the sends are stuck
	m.maxAge.Store(int64(time.Nanosecond)) // the stream is aged: the next call replaces it
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err := muxCall(ctx, m, 99, "x")
	cancel()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a 100 ms call took %v (%v): it waited for the stuck sends", d, err)
	}
	wg.Wait()
}
