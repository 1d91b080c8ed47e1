package client

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"google.golang.org/protobuf/proto"
)

// discardConn is a net.Conn that swallows writes.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)       { return len(b), nil }
func (discardConn) SetWriteDeadline(time.Time) error  { return nil }
func (discardConn) Close() error                      { return nil }
func (discardConn) SetReadDeadline(t time.Time) error { return nil }

// feed runs the client's reader over a byte stream as if a server sent it.
func feed(tb testing.TB, data []byte) {
	c, err := New(Config{Addrs: []string{"127.0.0.1:1"}, ReorderLimit: 64})
	if err != nil {
		tb.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range c.Events() {
		}
	}()
	conn := &tcpConn{c: discardConn{}, r: bufio.NewReader(bytes.NewReader(data)),
		lim: limits{maxIn: c.cfg.MaxInboundBody, writeTimeout: time.Second}}
	s := newSession(conn, "fuzz")
	_ = c.readLoop(s)
	c.Close()
	<-drained
}

func frame(op int32, m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return protocol.AppendFrame(nil, protocol.Version, op, 0, b)
}

func FuzzInbound(f *testing.F) {
	var stream []byte
	stream = append(stream, frame(protocol.OpMsgPush, &protocol.Msg{ConvId: "g:1", Seq: 3})...)
	stream = append(stream, frame(protocol.OpMsgPush, &protocol.Msg{ConvId: "g:1", Seq: 1})...)
	stream = append(stream, frame(protocol.OpSyncReply, &protocol.SyncReply{Convs: []*protocol.ConvMessages{
		{ConvId: "g:1", MaxSeq: 1 << 62, Msgs: []*protocol.Msg{{Seq: 2}, {Seq: 9}}}}})...)
	stream = append(stream, frame(protocol.OpMsgNotify, &protocol.MsgNotify{ConvId: "g:2", MaxSeq: 5})...)
	stream = append(stream, frame(protocol.OpMsgSendAck, &protocol.MsgSendAck{ClientMsgId: "x", Seq: 1})...)
	f.Add(stream)
	f.Add(protocol.AppendFrame(nil, 1, protocol.OpRaw, 0, protocol.AppendFrame(nil, 1, 1001, 0, []byte("a"))))
	f.Add(protocol.AppendFrame(nil, 1, protocol.OpRaw, 0, protocol.AppendFrame(nil, 1, protocol.OpRaw, 0, nil)))
	f.Add(protocol.AppendFrame(nil, 1, protocol.OpKick, 0, []byte{0xff}))
	f.Add(protocol.AppendFrame(nil, 1, protocol.OpHeartbeatReply, 0, []byte{0, 0}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 16, 0, 1, 0, 0, 0, 22, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		feed(t, data)
	})
}
