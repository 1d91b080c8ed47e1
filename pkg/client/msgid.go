package client

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

const (
	uuidLen        = 16
	uuidVersion7   = 0x70
	uuidVariant    = 0x80
	uuidCounterMax = 0x0fff // 12-bit counter in rand_a
)

// IDGen generates client message ids: UUIDv7 strings (RFC 9562), time
// ordered — a 48-bit unix-millisecond timestamp, then a 12-bit counter that
// keeps ids from one generator increasing within a millisecond, then 62
// random bits. The zero value is ready to use.
type IDGen struct {
	mu      sync.Mutex
	lastMs  int64
	counter uint16
}

// New returns a new id, e.g. "019a5b2e-7c41-7000-8f3a-5d2c9e1b4a77".
func (g *IDGen) New() string {
	var b [uuidLen]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go >= 1.24)

	g.mu.Lock()
	ms := time.Now().UnixMilli()
	if ms <= g.lastMs {
		g.counter++
		if g.counter > uuidCounterMax {
			// Counter exhausted: borrow the next millisecond.
			g.lastMs++
			g.counter = 0
		}
		ms = g.lastMs
	} else {
		g.lastMs = ms
		g.counter = 0
	}
	counter := g.counter
	g.mu.Unlock()

	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(ms))
	copy(b[0:6], ts[2:8])
	b[6] = uuidVersion7 | byte(counter>>8)
	b[7] = byte(counter)
	b[8] = uuidVariant | b[8]&0x3f
	return formatUUID(b)
}

func formatUUID(b [uuidLen]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}
