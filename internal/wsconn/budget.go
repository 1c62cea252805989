package wsconn

import (
	"net/netip"
	"sync"
)

// Outboxes are capped in bytes, not only in frames: per connection (one frame always
// fits an empty outbox, whatever its size, so that a single large message is sent), over
// the connections that share a key (the user's choice: signaling uses the client's
// address, or its /64), and over all connections, so that many stalled sockets cannot
// add up to unbounded memory. Send returns false for a frame that does not fit.
const (
	MaxOutboxBytes      = 1 << 20
	MaxOutboxBytesPerIP = 8 << 20
	MaxOutboxBytesTotal = 64 << 20
)

// Budget counts the bytes waiting in outboxes, per key and in total. The zero Budget is
// ready to use; one Budget is shared by the connections of a server (Conn.Account).
type Budget struct {
	mu    sync.Mutex
	perIP map[netip.Addr]int
	total int
}

// take counts n bytes for key; false, counting nothing, if a cap would be passed,
// unless force.
func (b *Budget) take(key netip.Addr, n int, force bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !force && (b.perIP[key]+n > MaxOutboxBytesPerIP || b.total+n > MaxOutboxBytesTotal) {
		return false
	}
	if b.perIP == nil {
		b.perIP = make(map[netip.Addr]int)
	}
	b.perIP[key] += n
	b.total += n
	return true
}

func (b *Budget) give(key netip.Addr, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if left := b.perIP[key] - n; left > 0 {
		b.perIP[key] = left
	} else {
		delete(b.perIP, key)
	}
}

// Bytes is what is counted in total and for key.
func (b *Budget) Bytes(key netip.Addr) (total, forKey int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total, b.perIP[key]
}
