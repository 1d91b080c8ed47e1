package protocol

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	const maxBody = 100
	tests := []struct {
		name    string
		in      []byte
		maxBody int
		want    Header
		wantErr error
	}{
		{name: "empty", in: nil, maxBody: maxBody, wantErr: ErrTruncated},
		{name: "15 bytes", in: rawHeader(16, 16, 1, 2, 3)[:15], maxBody: maxBody, wantErr: ErrTruncated},
		{name: "headerLen 0", in: rawHeader(16, 0, 1, 2, 3), maxBody: maxBody, wantErr: ErrHeaderLen},
		{name: "headerLen 15", in: rawHeader(16, 15, 1, 2, 3), maxBody: maxBody, wantErr: ErrHeaderLen},
		{name: "headerLen 17", in: rawHeader(17, 17, 1, 2, 3), maxBody: maxBody, wantErr: ErrHeaderLen},
		{name: "headerLen max", in: rawHeader(16, math.MaxUint16, 1, 2, 3), maxBody: maxBody, wantErr: ErrHeaderLen},
		{name: "packLen 0", in: rawHeader(0, 16, 1, 2, 3), maxBody: maxBody, wantErr: ErrPackLen},
		{name: "packLen 15", in: rawHeader(15, 16, 1, 2, 3), maxBody: maxBody, wantErr: ErrPackLen},
		{name: "packLen 16 empty body", in: rawHeader(16, 16, 1, 2, 3), maxBody: maxBody,
			want: Header{BodyLen: 0, Ver: 1, Op: 2, Seq: 3}},
		{name: "exact max", in: rawHeader(16+maxBody, 16, 1, 2, 3), maxBody: maxBody,
			want: Header{BodyLen: maxBody, Ver: 1, Op: 2, Seq: 3}},
		{name: "max plus one", in: rawHeader(16+maxBody+1, 16, 1, 2, 3), maxBody: maxBody, wantErr: ErrPackLen},
		{name: "packLen max uint32", in: rawHeader(math.MaxUint32, 16, 1, 2, 3), maxBody: maxBody, wantErr: ErrPackLen},
		{name: "default max exact", in: rawHeader(16+DefaultMaxBody, 16, 1, 7, 9), maxBody: 0,
			want: Header{BodyLen: DefaultMaxBody, Ver: 1, Op: 7, Seq: 9}},
		{name: "default max plus one", in: rawHeader(16+DefaultMaxBody+1, 16, 1, 7, 9), maxBody: -1, wantErr: ErrPackLen},
		{name: "huge maxBody does not overflow", in: rawHeader(math.MaxUint32, 16, 1, 2, 3), maxBody: math.MaxInt,
			want: Header{BodyLen: math.MaxUint32 - 16, Ver: 1, Op: 2, Seq: 3}},
		{name: "fields use their full width", in: rawHeader(20, 16, math.MaxUint16, math.MaxUint32, 0x80000000), maxBody: maxBody,
			want: Header{BodyLen: 4, Ver: math.MaxUint16, Op: -1, Seq: math.MinInt32}},
		{name: "trailing bytes ignored", in: append(rawHeader(18, 16, 1, 4, 5), 'h', 'i', 'x'), maxBody: maxBody,
			want: Header{BodyLen: 2, Ver: 1, Op: 4, Seq: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader(tt.in, tt.maxBody)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if got != (Header{}) {
					t.Errorf("header = %+v on error, want zero", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tt.want {
				t.Errorf("header = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseHeaderFrameError(t *testing.T) {
	_, err := ParseHeader(rawHeader(1<<30, 16, 1, 2, 3), 64)
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %T %v, want *FrameError", err, err)
	}
	if fe.PackLen != 1<<30 || fe.HeaderLen != 16 || fe.MaxBody != 64 || !errors.Is(fe, ErrPackLen) {
		t.Errorf("FrameError = %+v", fe)
	}
	if msg := fe.Error(); !strings.Contains(msg, "packLen=1073741824") || !strings.Contains(msg, "maxBody=64") {
		t.Errorf("message %q does not name the lengths", msg)
	}

	_, err = ParseHeader(rawHeader(16, 99, 1, 2, 3), 0)
	if !errors.As(err, &fe) || fe.HeaderLen != 99 || fe.MaxBody != DefaultMaxBody || !errors.Is(err, ErrHeaderLen) {
		t.Errorf("err = %v, want FrameError{headerLen 99, maxBody default}", err)
	}
}

func TestPutHeaderRoundTrip(t *testing.T) {
	var b [HeaderLen]byte
	for _, h := range []Header{
		{BodyLen: 0, Ver: 1, Op: OpHeartbeat, Seq: 0},
		{BodyLen: 5, Ver: 0, Op: OpBusinessMin, Seq: math.MaxInt32},
		{BodyLen: DefaultMaxBody, Ver: math.MaxUint16, Op: math.MinInt32, Seq: -1},
	} {
		PutHeader(b[:], h.BodyLen, h.Ver, h.Op, h.Seq)
		got, err := ParseHeader(b[:], DefaultMaxBody)
		if err != nil || got != h {
			t.Errorf("PutHeader(%+v) parsed back as %+v, %v", h, got, err)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	body := []byte("hello")
	prefix := []byte("prefix")
	got := AppendFrame(append([]byte(nil), prefix...), 1, OpSendMsg, 42, body)
	want := append(append(append([]byte(nil), prefix...), rawHeader(21, 16, 1, uint32(OpSendMsg), 42)...), body...)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendFrame = %x, want %x", got, want)
	}
	if n := FrameSize(len(body)); n != len(want)-len(prefix) {
		t.Errorf("FrameSize = %d, want %d", n, len(want)-len(prefix))
	}
}

func TestAppendFrameNoAllocWithCapacity(t *testing.T) {
	dst := make([]byte, 0, 4096)
	body := make([]byte, 1000)
	allocs := testing.AllocsPerRun(100, func() {
		dst = AppendFrame(dst[:0], Version, OpRaw, 1, body)
	})
	if allocs != 0 {
		t.Errorf("AppendFrame into a buffer with room: %v allocs, want 0", allocs)
	}
}

func TestUnpack(t *testing.T) {
	two := mustPack(t, Frame{Ver: 1, Op: OpAuth, Seq: 1, Body: []byte("first")},
		Frame{Ver: 1, Op: OpHeartbeat, Seq: 2})
	tests := []struct {
		name     string
		in       []byte
		maxBody  int
		want     Frame
		wantRest int
		wantErr  error
	}{
		{name: "two frames", in: two, maxBody: 100,
			want: Frame{Ver: 1, Op: OpAuth, Seq: 1, Body: []byte("first")}, wantRest: HeaderLen},
		{name: "empty", in: nil, maxBody: 100, wantErr: ErrTruncated},
		{name: "header only of a frame with a body", in: two[:HeaderLen], maxBody: 100, wantErr: ErrTruncated},
		{name: "body one short", in: two[:HeaderLen+4], maxBody: 100, wantErr: ErrTruncated},
		{name: "body over max", in: two, maxBody: 4, wantErr: ErrPackLen},
		{name: "exact max", in: two, maxBody: 5,
			want: Frame{Ver: 1, Op: OpAuth, Seq: 1, Body: []byte("first")}, wantRest: HeaderLen},
		{name: "bad headerLen", in: rawHeader(16, 12, 1, 2, 3), maxBody: 100, wantErr: ErrHeaderLen},
		{name: "packLen below header", in: rawHeader(8, 16, 1, 2, 3), maxBody: 100, wantErr: ErrPackLen},
		{name: "claims 4 GiB", in: rawHeader(math.MaxUint32, 16, 1, 2, 3), maxBody: 100, wantErr: ErrPackLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, rest, err := Unpack(tt.in, tt.maxBody)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(rest) != len(tt.in) {
					t.Errorf("rest has %d bytes on error, want the whole input (%d)", len(rest), len(tt.in))
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if f.Ver != tt.want.Ver || f.Op != tt.want.Op || f.Seq != tt.want.Seq || !bytes.Equal(f.Body, tt.want.Body) {
				t.Errorf("frame = %+v, want %+v", f, tt.want)
			}
			if len(rest) != tt.wantRest {
				t.Errorf("rest = %d bytes, want %d", len(rest), tt.wantRest)
			}
		})
	}
}

func TestUnpackBodyCannotOverwriteNextFrame(t *testing.T) {
	packed := mustPack(t, Frame{Ver: 1, Op: 1000, Seq: 1, Body: []byte("ab")},
		Frame{Ver: 1, Op: 1001, Seq: 2, Body: []byte("cd")})
	f, rest, err := Unpack(packed, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cap(f.Body) != len(f.Body) {
		t.Fatalf("body cap %d > len %d: an append would overwrite the next frame", cap(f.Body), len(f.Body))
	}
	_ = append(f.Body, 'X', 'X', 'X')
	g, _, err := Unpack(rest, 0)
	if err != nil || g.Op != 1001 || string(g.Body) != "cd" {
		t.Errorf("next frame = %+v, %v after appending to the first body", g, err)
	}
}

func TestReadFrame(t *testing.T) {
	frame := mustPack(t, Frame{Ver: 1, Op: OpSendMsg, Seq: 7, Body: []byte("payload")})
	tests := []struct {
		name     string
		in       []byte
		maxBody  int
		wantErr  error
		wantRead int // bytes consumed from the reader
	}{
		{name: "ok", in: frame, maxBody: 100, wantRead: len(frame)},
		{name: "exact max", in: frame, maxBody: len("payload"), wantRead: len(frame)},
		{name: "max minus one", in: frame, maxBody: len("payload") - 1, wantErr: ErrPackLen, wantRead: HeaderLen},
		{name: "eof before anything", in: nil, maxBody: 100, wantErr: io.EOF},
		{name: "eof inside header", in: frame[:10], maxBody: 100, wantErr: io.ErrUnexpectedEOF, wantRead: 10},
		{name: "eof after header", in: frame[:HeaderLen], maxBody: 100, wantErr: io.ErrUnexpectedEOF, wantRead: HeaderLen},
		{name: "eof inside body", in: frame[:len(frame)-1], maxBody: 100, wantErr: io.ErrUnexpectedEOF, wantRead: len(frame) - 1},
		{name: "bad headerLen", in: append(rawHeader(20, 20, 1, 2, 3), 1, 2, 3, 4), maxBody: 100, wantErr: ErrHeaderLen, wantRead: HeaderLen},
		{name: "packLen below header", in: rawHeader(3, 16, 1, 2, 3), maxBody: 100, wantErr: ErrPackLen, wantRead: HeaderLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &countingReader{r: bytes.NewReader(tt.in)}
			var hdr [HeaderLen]byte
			f, err := ReadFrame(r, &hdr, tt.maxBody, nil)
			if r.n != tt.wantRead {
				t.Errorf("read %d bytes, want %d", r.n, tt.wantRead)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if f.Ver != 1 || f.Op != OpSendMsg || f.Seq != 7 || string(f.Body) != "payload" {
				t.Errorf("frame = %+v", f)
			}
		})
	}
}

func TestReadFrameHugeClaimFailsBeforeBody(t *testing.T) {
	// A peer claims a 2 GiB frame and then streams forever. ReadFrame must
	// stop after the header, without reading or allocating the body.
	r := &countingReader{r: &endlessReader{prefix: rawHeader(1<<31, 16, 1, 2, 3)}}
	var hdr [HeaderLen]byte
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadFrame(r, &hdr, DefaultMaxBody, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrPackLen) {
		t.Fatalf("err = %v, want ErrPackLen", err)
	}
	if r.n != HeaderLen {
		t.Errorf("read %d bytes, want only the %d-byte header", r.n, HeaderLen)
	}
	// Generous bound: anything near the claimed size would be 2 GiB.
	const allocBound = 1 << 20
	if d := after.TotalAlloc - before.TotalAlloc; d > allocBound {
		t.Errorf("allocated %d bytes while rejecting a huge frame, want < %d", d, allocBound)
	}
}

func TestReadFrameBuffer(t *testing.T) {
	frames := mustPack(t,
		Frame{Ver: 1, Op: 1000, Seq: 1, Body: []byte("small")},
		Frame{Ver: 1, Op: 1001, Seq: 2, Body: bytes.Repeat([]byte("L"), 64)},
		Frame{Ver: 1, Op: 1002, Seq: 3})
	r := bytes.NewReader(frames)
	var hdr [HeaderLen]byte
	buf := make([]byte, 0, 16)

	f, err := ReadFrame(r, &hdr, 0, buf)
	if err != nil || string(f.Body) != "small" {
		t.Fatalf("first = %+v, %v", f, err)
	}
	if &f.Body[0] != &buf[:1][0] {
		t.Error("a body that fits was not read into buf")
	}
	f, err = ReadFrame(r, &hdr, 0, buf)
	if err != nil || len(f.Body) != 64 || f.Op != 1001 {
		t.Fatalf("second = %+v, %v", f, err)
	}
	if &f.Body[0] == &buf[:1][0] {
		t.Error("a body larger than cap(buf) was read into buf")
	}
	f, err = ReadFrame(r, &hdr, 0, buf)
	if err != nil || len(f.Body) != 0 || f.Op != 1002 || f.Seq != 3 {
		t.Fatalf("third = %+v, %v", f, err)
	}
	if _, err := ReadFrame(r, &hdr, 0, buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: err = %v, want io.EOF", err)
	}
}

func TestReadHeaderReadsOnlyTheHeader(t *testing.T) {
	frame := mustPack(t, Frame{Ver: 1, Op: 5, Seq: 6, Body: []byte("body")})
	r := &countingReader{r: bytes.NewReader(frame)}
	var hdr [HeaderLen]byte
	h, err := ReadHeader(r, &hdr, 0)
	if err != nil || h != (Header{BodyLen: 4, Ver: 1, Op: 5, Seq: 6}) {
		t.Fatalf("ReadHeader = %+v, %v", h, err)
	}
	if r.n != HeaderLen {
		t.Errorf("read %d bytes, want %d", r.n, HeaderLen)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	bodies := [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xAB}, 239),
		bytes.Repeat([]byte{0xCD}, 240), bytes.Repeat([]byte{0xEF}, 5000),
		bytes.Repeat([]byte{0x01}, DefaultMaxBody)}
	var wire bytes.Buffer
	for i, b := range bodies {
		if err := WriteFrame(&wire, Version, OpBusinessMin+int32(i), int32(-i), b); err != nil {
			t.Fatal(err)
		}
	}
	var hdr [HeaderLen]byte
	buf := make([]byte, 0, 512)
	for i, b := range bodies {
		f, err := ReadFrame(&wire, &hdr, 0, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Ver != Version || f.Op != OpBusinessMin+int32(i) || f.Seq != int32(-i) || !bytes.Equal(f.Body, b) {
			t.Fatalf("frame %d: got op %d seq %d body %d bytes", i, f.Op, f.Seq, len(f.Body))
		}
	}
	if wire.Len() != 0 {
		t.Errorf("%d bytes left over", wire.Len())
	}
}

// oneWriteRecorder fails the test if a frame is split over several writes.
type oneWriteRecorder struct{ writes [][]byte }

func (o *oneWriteRecorder) Write(p []byte) (int, error) {
	o.writes = append(o.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestWriteFrameSingleWrite(t *testing.T) {
	for _, n := range []int{0, 100, 300, 70 << 10} {
		var rec oneWriteRecorder
		body := bytes.Repeat([]byte{7}, n)
		if err := WriteFrame(&rec, 1, 2, 3, body); err != nil {
			t.Fatal(err)
		}
		if len(rec.writes) != 1 || len(rec.writes[0]) != HeaderLen+n {
			t.Errorf("body %d: %d writes", n, len(rec.writes))
		}
		if want := AppendFrame(nil, 1, 2, 3, body); !bytes.Equal(rec.writes[0], want) {
			t.Errorf("body %d: wrote different bytes than AppendFrame", n)
		}
	}
}

type errWriter struct{ err error }

func (e errWriter) Write([]byte) (int, error) { return 0, e.err }

func TestWriteFrameError(t *testing.T) {
	want := errors.New("broken pipe")
	if err := WriteFrame(errWriter{want}, 1, 2, 3, []byte("x")); !errors.Is(err, want) {
		t.Errorf("err = %v, want %v", err, want)
	}
}

func TestWriteFrameNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	var w discard
	body := make([]byte, 200)
	allocs := testing.AllocsPerRun(1000, func() {
		_ = WriteFrame(&w, Version, OpSendMsgReply, 1, body)
	})
	if allocs != 0 {
		t.Errorf("WriteFrame: %v allocs/op, want 0", allocs)
	}
}

func TestRawTCPAndWS(t *testing.T) {
	inner := []Frame{
		{Ver: 1, Op: 1000, Seq: 0, Body: []byte("push one")},
		{Ver: 1, Op: OpMsgPush, Seq: 0, Body: []byte{}},
		{Ver: 1, Op: 1001, Seq: 0, Body: bytes.Repeat([]byte("z"), 300)},
	}
	packed := mustPack(t, inner...)

	check := func(t *testing.T, run []byte) {
		t.Helper()
		var got []Frame
		err := SplitRaw(run, 0, func(f Frame) error {
			got = append(got, f)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(inner) {
			t.Fatalf("split %d frames, want %d", len(got), len(inner))
		}
		for i := range inner {
			if got[i].Op != inner[i].Op || got[i].Ver != inner[i].Ver || !bytes.Equal(got[i].Body, inner[i].Body) {
				t.Errorf("frame %d = %+v, want %+v", i, got[i], inner[i])
			}
		}
	}

	t.Run("tcp writes the packed frames as-is", func(t *testing.T) {
		out := AppendRawTCP([]byte("x"), packed)
		if !bytes.Equal(out[1:], packed) || out[0] != 'x' {
			t.Fatal("AppendRawTCP changed the packed bytes")
		}
		// A TCP client reads ordinary frames one by one.
		r := bytes.NewReader(out[1:])
		var hdr [HeaderLen]byte
		for i := range inner {
			f, err := ReadFrame(r, &hdr, 0, nil)
			if err != nil || f.Op != inner[i].Op {
				t.Fatalf("frame %d: %+v, %v", i, f, err)
			}
		}
		check(t, out[1:])
	})

	t.Run("ws wraps in one op 9 frame", func(t *testing.T) {
		out := AppendRawWS(nil, packed)
		outer, rest, err := Unpack(out, len(packed))
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) != 0 || outer.Op != OpRaw || outer.Ver != Version || outer.Seq != 0 {
			t.Fatalf("outer = op %d ver %d seq %d rest %d", outer.Op, outer.Ver, outer.Seq, len(rest))
		}
		if !bytes.Equal(outer.Body, packed) {
			t.Fatal("outer body is not the packed frames")
		}
		check(t, outer.Body)
	})
}

func TestSplitRawErrors(t *testing.T) {
	packed := mustPack(t, Frame{Ver: 1, Op: 1000, Body: []byte("a")}, Frame{Ver: 1, Op: 1001, Body: []byte("b")})

	if err := SplitRaw(nil, 0, func(Frame) error { t.Error("called for empty input"); return nil }); err != nil {
		t.Errorf("empty: %v", err)
	}

	calls := 0
	err := SplitRaw(packed[:len(packed)-1], 0, func(Frame) error { calls++; return nil })
	if !errors.Is(err, ErrTruncated) || calls != 1 {
		t.Errorf("truncated: err %v after %d calls, want ErrTruncated after 1", err, calls)
	}

	bad := append(append([]byte(nil), packed[:HeaderLen+1]...), rawHeader(16, 3, 1, 2, 3)...)
	calls = 0
	err = SplitRaw(bad, 0, func(Frame) error { calls++; return nil })
	if !errors.Is(err, ErrHeaderLen) || calls != 1 {
		t.Errorf("bad inner header: err %v after %d calls", err, calls)
	}

	stop := errors.New("stop")
	calls = 0
	err = SplitRaw(packed, 0, func(Frame) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("callback error: err %v after %d calls, want stop after 1", err, calls)
	}

	if err := SplitRaw(packed, 0, func(Frame) error { return nil }); err != nil {
		t.Errorf("valid: %v", err)
	}
}

func TestAlwaysAccepted(t *testing.T) {
	for _, op := range []int32{OpHeartbeatReply, OpRaw, OpMsgPush, OpKick, OpBusinessMin - 1} {
		if !AlwaysAccepted(op) {
			t.Errorf("AlwaysAccepted(%d) = false", op)
		}
	}
	for _, op := range []int32{OpBusinessMin, OpBusinessMin + 1, math.MaxInt32} {
		if AlwaysAccepted(op) {
			t.Errorf("AlwaysAccepted(%d) = true", op)
		}
	}
}
