package protocol

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzMaxBody bounds the body size the fuzz targets accept, small enough
// that the fuzzer can reach both sides of the limit.
const fuzzMaxBody = 256

func addFrameSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendFrame(nil, Version, OpHeartbeat, 1, nil))
	f.Add(AppendFrame(nil, Version, OpAuth, 1, []byte(`{"mid":1,"key":"k","room_id":"live://1"}`)))
	f.Add(mustPack(f, Frame{Ver: 1, Op: 1000, Body: []byte("a")}, Frame{Ver: 1, Op: 1001, Body: []byte("bc")}))
	f.Add(AppendRawWS(nil, mustPack(f, Frame{Ver: 1, Op: 1000, Body: []byte("inner")})))
	f.Add(AppendFrame(nil, Version, OpSendMsg, 2, bytes.Repeat([]byte{1}, fuzzMaxBody)))
	f.Add(rawHeader(16+fuzzMaxBody+1, 16, 1, 2, 3))
	f.Add(rawHeader(0xFFFFFFFF, 16, 1, 2, 3))
	f.Add(rawHeader(20, 17, 1, 2, 3))
	f.Add(rawHeader(3, 16, 1, 2, 3))
}

func isFrameError(err error) bool {
	return errors.Is(err, ErrTruncated) || errors.Is(err, ErrHeaderLen) || errors.Is(err, ErrPackLen)
}

func FuzzUnpack(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		rest := data
		for len(rest) > 0 {
			fr, next, err := Unpack(rest, fuzzMaxBody)
			if err != nil {
				if !isFrameError(err) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				if len(next) != len(rest) {
					t.Fatalf("rest changed on error")
				}
				return
			}
			if len(fr.Body) > fuzzMaxBody {
				t.Fatalf("body %d bytes > max %d", len(fr.Body), fuzzMaxBody)
			}
			used := len(rest) - len(next)
			if used != FrameSize(len(fr.Body)) {
				t.Fatalf("consumed %d bytes for a %d-byte body", used, len(fr.Body))
			}
			// A decoded frame re-encodes to exactly the bytes it came from.
			if enc := AppendFrame(nil, fr.Ver, fr.Op, fr.Seq, fr.Body); !bytes.Equal(enc, rest[:used]) {
				t.Fatalf("re-encoded %x, decoded from %x", enc, rest[:used])
			}
			rest = next
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		var hdr [HeaderLen]byte
		buf := make([]byte, 0, fuzzMaxBody/2)
		for {
			before := r.n
			fr, err := ReadFrame(r, &hdr, fuzzMaxBody, buf)
			read := r.n - before
			if err != nil {
				switch {
				case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				case errors.Is(err, ErrHeaderLen) || errors.Is(err, ErrPackLen):
					// A bad header is rejected before any body byte is read.
					if read != HeaderLen {
						t.Fatalf("read %d bytes before rejecting a bad header", read)
					}
				default:
					t.Fatalf("unexpected error %T: %v", err, err)
				}
				return
			}
			if len(fr.Body) > fuzzMaxBody || cap(fr.Body) > fuzzMaxBody {
				t.Fatalf("body len %d cap %d beyond max %d", len(fr.Body), cap(fr.Body), fuzzMaxBody)
			}
			if read != FrameSize(len(fr.Body)) {
				t.Fatalf("read %d bytes for a %d-byte body", read, len(fr.Body))
			}
			// ReadFrame and Unpack agree on the same bytes.
			uf, _, uerr := Unpack(data[before:], fuzzMaxBody)
			if uerr != nil || uf.Op != fr.Op || uf.Seq != fr.Seq || uf.Ver != fr.Ver || !bytes.Equal(uf.Body, fr.Body) {
				t.Fatalf("Unpack disagrees: %+v %v vs %+v", uf, uerr, fr)
			}
		}
	})
}

// FuzzSplitRaw checks the OpRaw splitter: it never panics, stops at the
// first bad inner frame, and hands out bodies within the limit.
func FuzzSplitRaw(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		total := 0
		err := SplitRaw(data, fuzzMaxBody, func(fr Frame) error {
			if len(fr.Body) > fuzzMaxBody {
				t.Fatalf("body %d > max", len(fr.Body))
			}
			total += FrameSize(len(fr.Body))
			return nil
		})
		if err == nil && total != len(data) {
			t.Fatalf("split %d of %d bytes without error", total, len(data))
		}
		if err != nil && !isFrameError(err) {
			t.Fatalf("unexpected error %T: %v", err, err)
		}
	})
}
