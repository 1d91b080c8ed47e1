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
// once the comet closed its side (or the stream broke) and every call it
// took is answered. When logic drains (Drain), it refuses the calls it
// reads from then on and asks the comet (a reply with call id 0, refused)
// to close its side: calls already on the wire are refused rather than
// lost, and the comet sends them to another logic.
func (l *Logic) ReceiveStream(stream pb.Logic_ReceiveStreamServer) error {
	s := &recvStream{l: l, stream: stream, calls: make(chan *pb.ReceiveReq)}
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.recvLoop() }()
	var err error
	select {
	case err = <-recvDone:
	case <-l.draining:
		s.answer(&pb.ReceiveReq{}, &pb.ReceiveReply{Refused: true}, errStopping)
		// Until the comet closes its side, or the stream ends (the gRPC
		// server's Stop after its graceful stop timed out).
		err = <-recvDone
	}
	// recvLoop has ended and closed calls: the workers finish the calls
	// they hold and exit; nothing uses the stream after this returns.
	s.workers.Wait()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// recvStream is one ReceiveStream's state.
type recvStream struct {
	l      *Logic
	stream pb.Logic_ReceiveStreamServer
	calls  chan *pb.ReceiveReq // to idle workers; closed when recvLoop ends

	sendMu  sync.Mutex // stream.Send is not safe for concurrent use
	workers sync.WaitGroup
	started int // workers started, <= receiveStreamWorkers; recvLoop only
}

// recvLoop reads calls and hands each to an idle worker, a new one, or
// (all busy) the first to finish; once logic drains it refuses them. It
// returns the stream's read error (io.EOF: the comet closed its side).
func (s *recvStream) recvLoop() error {
	defer close(s.calls)
	for {
		req, err := s.stream.Recv()
		if err != nil {
			return err
		}
		select {
		case <-s.l.draining:
			s.answer(req, &pb.ReceiveReply{Refused: true}, errStopping)
			continue
		default:
		}
		select {
		case s.calls <- req:
			continue
		default:
		}
		if s.started < receiveStreamWorkers {
			s.started++
			s.workers.Add(1)
			go s.work(req)
		} else {
			s.calls <- req
		}
	}
}

// work serves req, then every call handed to it until the stream's reads
// end.
func (s *recvStream) work(req *pb.ReceiveReq) {
	defer s.workers.Done()
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
