package protocol

import (
	"encoding/binary"
	"io"
	"testing"
)

// rawHeader builds a header with arbitrary (possibly invalid) fields.
func rawHeader(packLen uint32, headerLen, ver uint16, op, seq uint32) []byte {
	b := make([]byte, HeaderLen)
	binary.BigEndian.PutUint32(b, packLen)
	binary.BigEndian.PutUint16(b[4:], headerLen)
	binary.BigEndian.PutUint16(b[6:], ver)
	binary.BigEndian.PutUint32(b[8:], op)
	binary.BigEndian.PutUint32(b[12:], seq)
	return b
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// endlessReader returns an unlimited stream of zero bytes after prefix, so a
// decoder that trusts a claimed length would read (and allocate) forever.
type endlessReader struct{ prefix []byte }

func (e *endlessReader) Read(p []byte) (int, error) {
	if len(e.prefix) > 0 {
		n := copy(p, e.prefix)
		e.prefix = e.prefix[n:]
		return n, nil
	}
	clear(p)
	return len(p), nil
}

// discard is an io.Writer that keeps nothing and does not allocate.
type discard struct{ n int }

func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// mustAppend encodes frames into one packed run, as the job packs pushes.
func mustPack(tb testing.TB, frames ...Frame) []byte {
	tb.Helper()
	var b []byte
	for _, f := range frames {
		b = AppendFrame(b, f.Ver, f.Op, f.Seq, f.Body)
	}
	return b
}
