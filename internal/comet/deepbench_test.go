package comet

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/hubuim/hubuim/api/protocol"
)

// BenchmarkReceive is the client → logic path of one frame: handle hands
// it off the reader's stack, calls logic over real loopback gRPC (a fake
// logic in this process) on the comet's ReceiveStreams and queues the
// reply. parallel runs one connection per benchmark goroutine
// (GOMAXPROCS×4 of them), as many readers calling logic at once.
func BenchmarkReceive(b *testing.B) { benchReceive(b, false, DefaultLogicStreams) }

// BenchmarkReceiveUnary is BenchmarkReceive with a unary Receive call per
// frame (logic_streams < 0; what comets did before the streams).
func BenchmarkReceiveUnary(b *testing.B) { benchReceive(b, false, -1) }

// BenchmarkReceiveFresh is BenchmarkReceiveUnary with every deep call on
// a short-lived goroutine (the deep-stack workers' fallback; what the
// readers did before them).
func BenchmarkReceiveFresh(b *testing.B) { benchReceive(b, true, -1) }

func benchReceive(b *testing.B, fresh bool, streams int) {
	body := make([]byte, 64)
	b.Run("serial", func(b *testing.B) {
		s := newReceiveBenchServer(b, fresh, streams)
		c := s.addMemConn(b, "k", "")
		f := protocol.Frame{Ver: protocol.Version, Op: protocol.OpSendMsg, Seq: 1, Body: body}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.handle(f)
			if i%64 == 63 {
				waitIdle(s, []*conn{c})
			}
		}
		b.StopTimer()
		waitIdle(s, []*conn{c})
	})
	b.Run("parallel", func(b *testing.B) {
		s := newReceiveBenchServer(b, fresh, streams)
		var next atomic.Int64
		b.SetParallelism(4)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := s.addMemConn(b, "k"+strconv.FormatInt(next.Add(1), 10), "")
			f := protocol.Frame{Ver: protocol.Version, Op: protocol.OpSendMsg, Seq: 1, Body: body}
			i := 0
			for pb.Next() {
				c.handle(f)
				if i++; i%64 == 0 {
					waitIdle(s, []*conn{c})
				}
			}
			waitIdle(s, []*conn{c})
		})
	})
}
