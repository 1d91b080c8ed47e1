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
