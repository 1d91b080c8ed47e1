package logic_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic"
)

// Ops of the stream tests' handlers.
const (
	opGated    int32 = 901 // waits for the test's gate
	opFail     int32 = 902 // fails with ResourceExhausted
	opDeadline int32 = 903 // waits for its ctx
	opEcho     int32 = 904 // answers at once with its seq
)

// streamHandlers: opGated signals entered (if not nil), then waits for gate.
func streamHandlers(gate <-chan struct{}, entered chan<- struct{}) map[int32]logic.ReceiveHandler {
	echo := func(_ context.Context, req *pb.ReceiveReq) (*protocol.Proto, error) {
		return &protocol.Proto{Op: req.Proto.Op, Seq: req.Proto.Seq}, nil
	}
	return map[int32]logic.ReceiveHandler{
		opGated: func(ctx context.Context, req *pb.ReceiveReq) (*protocol.Proto, error) {
			if entered != nil {
				entered <- struct{}{}
			}
			<-gate
			return echo(ctx, req)
		},
		opFail: func(context.Context, *pb.ReceiveReq) (*protocol.Proto, error) {
			return nil, status.Error(codes.ResourceExhausted, "slow down")
		},
		opDeadline: func(ctx context.Context, _ *pb.ReceiveReq) (*protocol.Proto, error) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		},
		opEcho: echo,
	}
}

// openStream opens a ReceiveStream to e's logic over loopback gRPC, ended
// with the test.
func openStream(t *testing.T, e *env) pb.Logic_ReceiveStreamClient {
	t.Helper()
	s, err := pb.NewLogicClient(e.grpcClient(t)).ReceiveStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func recvReply(t *testing.T, s pb.Logic_ReceiveStreamClient) *pb.ReceiveReply {
	t.Helper()
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return r
}

func sendCall(t *testing.T, s pb.Logic_ReceiveStreamClient, id uint64, op int32, timeoutMS int64) {
	t.Helper()
	if err := s.Send(&pb.ReceiveReq{Key: "k", CallId: id, TimeoutMs: timeoutMS, Proto: &protocol.Proto{Op: op, Seq: int32(id)}}); err != nil {
		t.Fatalf("Send(%d): %v", id, err)
	}
}

// TestReceiveStream: calls on one stream are answered in completion order,
// each with its call id; failures carry the handler's status; the caller's
// timeout bounds the handler; closing the sending side ends the stream
// once the calls in flight are answered.
func TestReceiveStream(t *testing.T) {
	gate := make(chan struct{})
	observed := make(chan codes.Code, 10)
	e := newEnvDeps(t, logic.Config{}, nil, logic.Deps{Handlers: streamHandlers(gate, nil), ObserveCall: func(method string, _ time.Time, err error) {
		if method == pb.Logic_Receive_FullMethodName {
			observed <- status.Code(err)
		}
	}})
	s := openStream(t, e)
	sendCall(t, s, 1, opGated, 0)
	sendCall(t, s, 2, opEcho, 0)
	if r := recvReply(t, s); r.CallId != 2 || r.Code != 0 || r.Proto.GetSeq() != 2 {
		t.Fatalf("first reply = %v, want call 2 (call 1 is held)", r)
	}
	sendCall(t, s, 3, opFail, 0)
	if r := recvReply(t, s); r.CallId != 3 || codes.Code(r.Code) != codes.ResourceExhausted || r.Message != "slow down" || r.Proto != nil {
		t.Fatalf("failed call's reply = %v", r)
	}
	sendCall(t, s, 4, opDeadline, 50)
	if r := recvReply(t, s); r.CallId != 4 || codes.Code(r.Code) != codes.DeadlineExceeded {
		t.Fatalf("timed-out call's reply = %v", r)
	}
	sendCall(t, s, 5, 4242, 0)
	if r := recvReply(t, s); r.CallId != 5 || r.Code != 0 || r.Proto != nil {
		t.Fatalf("unhandled op's reply = %v, want an empty reply", r)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if r := recvReply(t, s); r.CallId != 1 || r.Proto.GetSeq() != 1 {
		t.Fatalf("held call's reply = %v", r)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last reply: %v, want io.EOF (stream ended OK)", err)
	}
	if n := e.counter(t, "hubuim_logic_receive_total", map[string]string{"result": "handled"}); n != 2 {
		t.Fatalf("handled = %v, want 2", n)
	}
	got := map[codes.Code]int{}
	for range 5 {
		got[<-observed]++
	}
	if got[codes.OK] != 3 || got[codes.ResourceExhausted] != 1 || got[codes.DeadlineExceeded] != 1 {
		t.Fatalf("observed calls by code %v, want 3 OK, 1 ResourceExhausted, 1 DeadlineExceeded", got)
	}
}

// TestReceiveStreamDrain: on Drain, logic answers the calls in flight,
// refuses the ones it reads from then on, asks the comet to close its side
// (a refused reply with call id 0) and ends the stream without an error
// once it has.
func TestReceiveStreamDrain(t *testing.T) {
	for _, busy := range []bool{true, false} {
		t.Run(map[bool]string{true: "call_in_flight", false: "idle"}[busy], func(t *testing.T) {
			gate, entered := make(chan struct{}), make(chan struct{}, 1)
			e := newEnv(t, logic.Config{}, nil, streamHandlers(gate, entered))
			s := openStream(t, e)
			sendCall(t, s, 2, opEcho, 0)
			if r := recvReply(t, s); r.CallId != 2 {
				t.Fatalf("reply = %v, want call 2", r)
			}
			if busy {
				sendCall(t, s, 1, opGated, 0)
				<-entered
			}
			e.l.Drain()
			sendCall(t, s, 3, opEcho, 0) // on the wire when logic drains
			var control, refused bool
			for !control || !refused {
				r := recvReply(t, s)
				switch {
				case r.CallId == 0 && r.Refused && codes.Code(r.Code) == codes.Unavailable:
					control = true
				case r.CallId == 3 && r.Refused && codes.Code(r.Code) == codes.Unavailable:
					refused = true
				default:
					t.Fatalf("reply after Drain: %v, want the close request and call 3 refused", r)
				}
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if busy {
				close(gate)
				if r := recvReply(t, s); r.CallId != 1 || r.Code != 0 || r.Refused {
					t.Fatalf("call in flight at Drain: %v, want answered", r)
				}
			}
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the drain: %v, want io.EOF", err)
			}
		})
	}
}
