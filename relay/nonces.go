package relay

import (
	"encoding/binary"
	"sync"
	"time"
)

// nonceBook remembers the NONCEs pion handed out, read off its 401 and 438 answers on the
// way out, so that the gate can tell a request carrying one of them from a request with a
// made-up nonce without deriving any key. pion signs its nonces with a key of its own
// that relay cannot see; pion/turn v4 issues one nonce per minute, valid for an hour, so
// the book holds a few dozen.
//
// A made-up nonce proves nothing about the sender: such a request is answered 438 with a
// nonce from the book and never counts as an authentication failure of anybody.
type nonceBook struct {
	mu     sync.Mutex
	seen   map[string]int64 // nonce -> unix nanoseconds it was first seen going out
	latest string
}

const (
	// nonceValidity is how long after relay first saw a nonce it is taken as one pion
	// still accepts: pion accepts its nonce for up to 61 minutes after the minute it was
	// made in. A nonce pion has retired in the meantime gets pion's own 438.
	nonceValidity = 62 * time.Minute
	// nonceFresh bounds the age of the nonce the gate hands out itself in a 438; an older
	// one is left to pion to renew.
	nonceFresh = 30 * time.Minute
	// maxNonces caps the book: more than an hour of pion's nonces. Were pion to issue a
	// nonce per request, the oldest would go first and their holders get a 438 from the
	// gate with a recent one.
	maxNonces = 256
)

const attrNonce = 0x0015

func newNonceBook() *nonceBook { return &nonceBook{seen: make(map[string]int64)} }

// observe records the NONCE of p if p is a STUN error response carrying one.
func (nb *nonceBook) observe(p []byte) {
	// Error responses only: class bits C1 and C0 both set.
	if len(p) < stunHeaderSize || p[0]&0xC0 != 0 || binary.BigEndian.Uint16(p[0:2])&0x0110 != 0x0110 {
		return
	}
	for off := stunHeaderSize; off+4 <= len(p); {
		t := binary.BigEndian.Uint16(p[off : off+2])
		l := int(binary.BigEndian.Uint16(p[off+2 : off+4]))
		if off+4+l > len(p) {
			return
		}
		if t == attrNonce {
			nb.add(p[off+4:off+4+l], time.Now())
			return
		}
		off += 4 + (l+3)&^3
	}
}

func (nb *nonceBook) add(nonce []byte, now time.Time) {
	if len(nonce) == 0 {
		return
	}
	nb.mu.Lock()
	defer nb.mu.Unlock()
	if _, ok := nb.seen[string(nonce)]; ok {
		return
	}
	if len(nb.seen) >= maxNonces {
		oldest, at := "", int64(0)
		for n, t := range nb.seen {
			if oldest == "" || t < at {
				oldest, at = n, t
			}
		}
		delete(nb.seen, oldest)
	}
	n := string(nonce)
	nb.seen[n] = now.UnixNano()
	nb.latest = n
}

// known reports whether nonce is one pion handed out and may still accept.
func (nb *nonceBook) known(nonce []byte, now time.Time) bool {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	t, ok := nb.seen[string(nonce)]
	return ok && now.UnixNano()-t < int64(nonceValidity)
}

// fresh returns the nonce pion handed out last, if it is recent enough to give a client.
func (nb *nonceBook) fresh(now time.Time) (string, bool) {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	if nb.latest == "" || now.UnixNano()-nb.seen[nb.latest] >= int64(nonceFresh) {
		return "", false
	}
	return nb.latest, true
}
