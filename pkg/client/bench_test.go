package client

import (
	"bufio"
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// BenchmarkInboundPush measures the receive path of in-order MsgPush
// frames: read, decode, seq tracking, event delivery.
func BenchmarkInboundPush(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 64)
	var stream []byte
	for i := 1; i <= b.N; i++ {
		stream = append(stream, frame(protocol.OpMsgPush, &protocol.Msg{
			ConvId: "g:1", Seq: int64(i), MsgId: int64(i), Sender: 7, Payload: payload})...)
	}
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}, EventBuffer: 1024})
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan int)
	go func() {
		n := 0
		for range c.Events() {
			n++
		}
		drained <- n
	}()
	conn := &tcpConn{c: discardConn{}, r: bufio.NewReaderSize(bytes.NewReader(stream), 64<<10),
		lim: limits{maxIn: c.cfg.MaxInboundBody, writeTimeout: time.Second}}
	s := newSession(conn, "bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / b.N))
	b.ResetTimer()
	_ = c.readLoop(s)
	b.StopTimer()
	c.Close()
	if n := <-drained; n != b.N {
		b.Fatalf("delivered %d of %d", n, b.N)
	}
}

// BenchmarkInboundPushReordered is the receive path when every other
// message overtakes the one before it (2, 1, 4, 3, ...), as when a
// device's own ACK arrives before the push of the peer's message that got
// the seq below it: each pair opens a gap that the next frame fills. (The
// pull, if one is sent, is never answered here: this measures the cost of
// the reorder path, the pulls per message are counted by imbench chat.)
func BenchmarkInboundPushReordered(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 64)
	n := b.N + b.N%2
	var stream []byte
	for i := 1; i <= n; i += 2 {
		for _, seq := range []int64{int64(i + 1), int64(i)} {
			stream = append(stream, frame(protocol.OpMsgPush, &protocol.Msg{
				ConvId: "g:1", Seq: seq, MsgId: seq, Sender: 7, Payload: payload})...)
		}
	}
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}, EventBuffer: 1024})
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan int)
	go func() {
		n := 0
		for range c.Events() {
			n++
		}
		drained <- n
	}()
	conn := &tcpConn{c: discardConn{}, r: bufio.NewReaderSize(bytes.NewReader(stream), 64<<10),
		lim: limits{maxIn: c.cfg.MaxInboundBody, writeTimeout: time.Second}}
	s := newSession(conn, "bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / n))
	b.ResetTimer()
	_ = c.readLoop(s)
	b.StopTimer()
	c.Close()
	if got := <-drained; got != n {
		b.Fatalf("delivered %d of %d", got, n)
	}
}

func BenchmarkIDGen(b *testing.B) {
	var g IDGen
	b.ReportAllocs()
	for b.Loop() {
		_ = g.New()
	}
}

// BenchmarkSendRoundTrip is one Send against the in-process fake comet
// over loopback TCP (client and server costs together).
func BenchmarkSendRoundTrip(b *testing.B) {
	srv := newFakeServer(b, TransportTCP)
	cfg := testConfig(srv)
	cfg.EventBuffer = 1 << 14
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for range c.Events() {
		}
	}()
	if err := c.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := []byte("hello")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(context.Background(), Group(1), 1, payload); err != nil {
			b.Fatal(err)
		}
	}
}
