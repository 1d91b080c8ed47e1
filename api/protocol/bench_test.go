package protocol

import (
	"bytes"
	"testing"
)

// benchBodySize is a typical push body.
const benchBodySize = 512

func BenchmarkAppendFrame(b *testing.B) {
	body := make([]byte, benchBodySize)
	dst := make([]byte, 0, FrameSize(benchBodySize))
	b.SetBytes(int64(FrameSize(benchBodySize)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendFrame(dst[:0], Version, OpSendMsgReply, 1, body)
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	body := make([]byte, benchBodySize)
	var w discard
	b.SetBytes(int64(FrameSize(benchBodySize)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteFrame(&w, Version, OpSendMsgReply, 1, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFrame(b *testing.B) {
	wire := AppendFrame(nil, Version, OpSendMsg, 1, make([]byte, benchBodySize))
	r := bytes.NewReader(wire)
	var hdr [HeaderLen]byte
	buf := make([]byte, 0, DefaultMaxBody)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(wire)
		if _, err := ReadFrame(r, &hdr, DefaultMaxBody, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnpack(b *testing.B) {
	wire := AppendFrame(nil, Version, OpSendMsg, 1, make([]byte, benchBodySize))
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Unpack(wire, DefaultMaxBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplitRaw(b *testing.B) {
	const frames = 32
	var packed []byte
	for i := range frames {
		packed = AppendFrame(packed, Version, OpBusinessMin, int32(i), make([]byte, 64))
	}
	count := 0
	fn := func(Frame) error { count++; return nil }
	b.SetBytes(int64(len(packed)))
	b.ReportAllocs()
	for b.Loop() {
		if err := SplitRaw(packed, DefaultMaxBody, fn); err != nil {
			b.Fatal(err)
		}
	}
}
