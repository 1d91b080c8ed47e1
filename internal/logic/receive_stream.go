package logic

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
)

// receiveStreamWorkers bounds the goroutines serving one ReceiveStream's
// calls at once. They are long-lived for the stream's life, so a call runs
// on a stack already grown by earlier ones (a send goes deep: Redis, the
// store, Kafka) instead of growing a fresh goroutine's. Calls wait for
// Redis and the store, so the calls in flight are a comet's frame rate
// times that latency (imbench chat keeps ~225 in flight over a comet's
// streams). With all of them busy the stream stops reading, and gRPC flow
// control holds the comet back.
const receiveStreamWorkers = 256

// errStopping answers the calls a stream receives after logic began to
// stop: the comet fails them like a Receive on a closing connection, and
// its client resends.
var errStopping = status.Error(codes.Unavailable, "logic is stopping")

// ReceiveStream serves Receive calls multiplexed on one stream (see
// api/logic/logic.proto): each request is handled like a unary Receive, on
// one of the stream's workers, and answered with its call id. It returns
// when the comet closes its side and every call is answered, when logic
// drains (Drain: the calls in flight are answered first, later ones get
// Unavailable), or when the stream breaks.
func (l *Logic) ReceiveStream(stream pb.Logic_ReceiveStreamServer) error {
	s := &recvStream{l: l, stream: stream, calls: make(chan *pb.ReceiveReq), drained: make(chan struct{})}
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.recvLoop() }()
	ctx := stream.Context()
	select {
	case err := <-recvDone:
		s.stop()
		<-s.drained
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-l.draining:
		s.stop()
		select {
		case <-s.drained:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recvStream is one ReceiveStream's state.
type recvStream struct {
	l      *Logic
	stream pb.Logic_ReceiveStreamServer
	calls  chan *pb.ReceiveReq // to idle workers; closed when recvLoop ends

	sendMu sync.Mutex // stream.Send is not safe for concurrent use

	mu       sync.Mutex
	workers  int  // started, <= receiveStreamWorkers
	inflight int  // calls received and not yet answered
	stopping bool // no new calls: stop was called
	drained  chan struct{}
}

// recvLoop reads calls and hands each to an idle worker, a new one, or
// (all busy) the first to finish. It returns the stream's read error
// (io.EOF: the comet closed its side).
func (s *recvStream) recvLoop() error {
	defer close(s.calls)
	for {
		req, err := s.stream.Recv()
		if err != nil {
			return err
		}
		if !s.begin() {
			s.answer(req, &pb.ReceiveReply{Refused: true}, errStopping)
			continue
		}
		select {
		case s.calls <- req:
			continue
		default:
		}
		s.mu.Lock()
		spawn := s.workers < receiveStreamWorkers
		if spawn {
			s.workers++
		}
		s.mu.Unlock()
		if spawn {
			go s.work(req)
		} else {
			s.calls <- req
		}
	}
}

// begin counts a call in flight, unless the stream is stopping or logic
// draining (checked here too, so that a call read after Drain returned is
// refused even before ReceiveStream has seen it).
func (s *recvStream) begin() bool {
	select {
	case <-s.l.draining:
		s.stop()
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.inflight++
	return true
}

// end counts a call answered.
func (s *recvStream) end() {
	s.mu.Lock()
	s.inflight--
	if s.stopping && s.inflight == 0 {
		close(s.drained)
	}
	s.mu.Unlock()
}

// stop takes no new calls; drained closes once the calls in flight are
// answered.
func (s *recvStream) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	s.stopping = true
	if s.inflight == 0 {
		close(s.drained)
	}
}

// work serves req, then every call handed to it until the stream's reads
// end.
func (s *recvStream) work(req *pb.ReceiveReq) {
	for {
		s.serve(req)
		var ok bool
		if req, ok = <-s.calls; !ok {
			return
		}
	}
}

// serve runs one call like a unary Receive with the caller's deadline and
// answers it.
func (s *recvStream) serve(req *pb.ReceiveReq) {
	defer s.end()
	start := time.Now()
	ctx := s.stream.Context()
	var cancel context.CancelFunc
	if ms := req.GetTimeoutMs(); ms > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
	}
	reply, err := s.l.Receive(ctx, req)
	if cancel != nil {
		cancel()
	}
	if s.l.observe != nil {
		s.l.observe(pb.Logic_Receive_FullMethodName, start, err)
	}
	s.answer(req, reply, err)
}

// answer sends the reply of req's call: reply, or err's status. A failed
// send is the stream breaking; the comet fails the call on its side.
func (s *recvStream) answer(req *pb.ReceiveReq, reply *pb.ReceiveReply, err error) {
	if reply == nil {
		reply = &pb.ReceiveReply{}
	}
	reply.CallId = req.GetCallId()
	if err != nil {
		st := status.Convert(err)
		reply.Code, reply.Message = uint32(st.Code()), st.Message()
	}
	s.sendMu.Lock()
	_ = s.stream.Send(reply)
	s.sendMu.Unlock()
}
