// Package protocol is the HubuIM wire protocol: the goim v2 frame codec
// (PROTOCOL.md), the operation numbers, and the protobuf bodies of the IM
// operations and of the packet carried between tiers.
//
// A frame is a 16-byte header followed by the body:
//
//	packLen   uint32  header + body length
//	headerLen uint16  always 16
//	ver       uint16
//	op        uint32
//	seq       uint32
//
// All integers are big-endian. The codec never allocates the length a peer
// claims before checking it against the configured maximum body size.
package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	// HeaderLen is the fixed header length of every frame.
	HeaderLen = 16
	// DefaultMaxBody is the default maximum body size (16 KiB).
	DefaultMaxBody = 16 << 10

	packLenSize   = 4
	headerLenSize = 2
	verSize       = 2
	opSize        = 4

	headerLenOff = packLenSize
	verOff       = headerLenOff + headerLenSize
	opOff        = verOff + verSize
	seqOff       = opOff + opSize
)

// Errors returned by the decoder. They are protocol violations: the
// connection that sent them is closed with the error as the reason.
var (
	ErrHeaderLen = errors.New("protocol: header length is not 16")
	ErrPackLen   = errors.New("protocol: pack length out of range")
	ErrTruncated = errors.New("protocol: truncated frame")
)

// FrameError describes a bad frame header. It wraps ErrHeaderLen or
// ErrPackLen so callers can test with errors.Is.
type FrameError struct {
	Err       error
	PackLen   uint32
	HeaderLen uint16
	MaxBody   int
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("%v (packLen=%d headerLen=%d maxBody=%d)", e.Err, e.PackLen, e.HeaderLen, e.MaxBody)
}

func (e *FrameError) Unwrap() error { return e.Err }

// Header is a decoded frame header.
type Header struct {
	BodyLen int
	Ver     int32
	Op      int32
	Seq     int32
}

// Frame is one decoded packet. Body aliases the buffer it was decoded from.
type Frame struct {
	Ver  int32
	Op   int32
	Seq  int32
	Body []byte
}

// ParseHeader decodes and checks a 16-byte header. maxBody <= 0 means
// DefaultMaxBody.
func ParseHeader(b []byte, maxBody int) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrTruncated
	}
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	packLen := binary.BigEndian.Uint32(b)
	headerLen := binary.BigEndian.Uint16(b[headerLenOff:])
	if headerLen != HeaderLen {
		return Header{}, &FrameError{Err: ErrHeaderLen, PackLen: packLen, HeaderLen: headerLen, MaxBody: maxBody}
	}
	if packLen < HeaderLen || uint64(packLen) > uint64(maxBody)+HeaderLen {
		return Header{}, &FrameError{Err: ErrPackLen, PackLen: packLen, HeaderLen: headerLen, MaxBody: maxBody}
	}
	return Header{
		BodyLen: int(packLen) - HeaderLen,
		Ver:     int32(binary.BigEndian.Uint16(b[verOff:])),
		Op:      int32(binary.BigEndian.Uint32(b[opOff:])),
		Seq:     int32(binary.BigEndian.Uint32(b[seqOff:])),
	}, nil
}

// PutHeader writes a header for a body of bodyLen bytes into b[:16].
func PutHeader(b []byte, bodyLen int, ver, op, seq int32) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b, uint32(HeaderLen+bodyLen))
	binary.BigEndian.PutUint16(b[headerLenOff:], HeaderLen)
	binary.BigEndian.PutUint16(b[verOff:], uint16(ver))
	binary.BigEndian.PutUint32(b[opOff:], uint32(op))
	binary.BigEndian.PutUint32(b[seqOff:], uint32(seq))
}

// AppendFrame appends one encoded frame to dst.
func AppendFrame(dst []byte, ver, op, seq int32, body []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, HeaderLen)...)
	PutHeader(dst[n:], len(body), ver, op, seq)
	return append(dst, body...)
}

// FrameSize is the encoded size of a frame with a body of bodyLen bytes.
func FrameSize(bodyLen int) int { return HeaderLen + bodyLen }

// Unpack decodes the first frame in b and returns it with the bytes after
// it. The frame's body aliases b.
func Unpack(b []byte, maxBody int) (Frame, []byte, error) {
	h, err := ParseHeader(b, maxBody)
	if err != nil {
		return Frame{}, b, err
	}
	end := HeaderLen + h.BodyLen
	if len(b) < end {
		return Frame{}, b, ErrTruncated
	}
	return Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq, Body: b[HeaderLen:end:end]}, b[end:], nil
}

// ReadHeader reads and checks one header from r into hdr. It never reads
// past the header, so the caller decides where the body goes.
func ReadHeader(r io.Reader, hdr *[HeaderLen]byte, maxBody int) (Header, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Header{}, err
	}
	return ParseHeader(hdr[:], maxBody)
}

// ReadFrame reads one whole frame from r. The body is read into buf when it
// fits and into a new slice otherwise; the returned frame's body aliases
// whichever was used.
func ReadFrame(r io.Reader, hdr *[HeaderLen]byte, maxBody int, buf []byte) (Frame, error) {
	h, err := ReadHeader(r, hdr, maxBody)
	if err != nil {
		return Frame{}, err
	}
	var body []byte
	if h.BodyLen <= cap(buf) {
		body = buf[:h.BodyLen]
	} else {
		body = make([]byte, h.BodyLen)
	}
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Ver: h.Ver, Op: h.Op, Seq: h.Seq, Body: body}, nil
}

// Sizes of the buffers WriteFrame encodes into. A buffer that grew past
// maxPooledWriteBuf for one big frame is dropped rather than kept.
const (
	writeBufSize      = 512
	maxPooledWriteBuf = 64 << 10
)

// writeBufPool holds WriteFrame's encode buffers: a buffer on WriteFrame's
// stack escapes through the io.Writer interface, so without the pool every
// call allocated.
var writeBufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, writeBufSize)
	return &b
}}

// WriteFrame writes one frame to w as a single Write call. It does not
// allocate in steady state; w must not keep the slice it is given (the
// io.Writer contract).
func WriteFrame(w io.Writer, ver, op, seq int32, body []byte) error {
	bp := writeBufPool.Get().(*[]byte)
	buf := AppendFrame((*bp)[:0], ver, op, seq, body)
	_, err := w.Write(buf)
	if cap(buf) <= maxPooledWriteBuf {
		*bp = buf[:0]
		writeBufPool.Put(bp)
	}
	return err
}

// AppendRawTCP appends an OpRaw packet as it goes on a TCP connection: its
// body already is a run of whole frames, so it is written as-is.
func AppendRawTCP(dst, packed []byte) []byte { return append(dst, packed...) }

// AppendRawWS appends an OpRaw packet as one WebSocket message: an outer
// header with op 9 followed by the packed inner frames.
func AppendRawWS(dst, packed []byte) []byte {
	return AppendFrame(dst, Version, OpRaw, 0, packed)
}

// SplitRaw calls fn for each frame packed in an OpRaw body. It stops at the
// first error, including a truncated or malformed inner frame.
func SplitRaw(packed []byte, maxBody int, fn func(Frame) error) error {
	for len(packed) > 0 {
		f, rest, err := Unpack(packed, maxBody)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
		packed = rest
	}
	return nil
}
