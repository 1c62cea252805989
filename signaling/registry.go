package signaling

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/relayproject/relay/config"
)

// Peer is a registered client connection as the registry sees it.
type Peer interface {
	// Send queues b for the client without blocking; false if the peer cannot take it
	// (closed, or too far behind).
	Send(b []byte) bool
	// Close ends the connection.
	Close()
}

// Registration errors.
var (
	ErrIDTaken = errors.New("signaling: id taken")
	ErrFull    = errors.New("signaling: concurrent limit reached")
)

// Queued is a message held for a peer that is not connected.
type Queued struct {
	Src, Dst string
	Data     []byte     // the encoded outbound message
	At       time.Time  // when it was queued, for expiry
	From     netip.Addr // the sender's address: whose byte budget the message counts against
}

// SourcedSender is a Peer that holds what it is sent in a buffer shared by many senders
// (a peer on another node, reached through a node-wide outbox): the server hands it the
// sender's address too, so that the buffer can cap each address's share.
type SourcedSender interface {
	SendFrom(b []byte, from netip.Addr) bool
}

// Registry maps peer ids to connections and holds messages for absent ids. The
// in-memory implementation serves one node; an implementation over a shared store can
// route between nodes behind the same interface.
type Registry interface {
	// Register claims id for token. A live id with the same token is replaced (a
	// reconnect): the previous Peer is returned for the caller to close. A live id with
	// another token is ErrIDTaken; a full registry is ErrFull.
	Register(id, token string, p Peer) (replaced Peer, err error)
	// Unregister frees id if p still holds it, and reports whether it did.
	Unregister(id string, p Peer) bool
	// Lookup returns the Peer holding id, or nil.
	Lookup(id string) Peer
	// Taken reports whether id is registered.
	Taken(id string) bool
	// IDs lists the registered ids.
	IDs() []string
	// Enqueue holds q for q.Dst; false (and nothing held) if that would pass a cap:
	// messages or bytes for q.Dst, bytes from q.From's address, bytes in total.
	Enqueue(q Queued) bool
	// Drain returns and forgets the messages held for id, oldest first.
	Drain(id string) []Queued
	// Expire drops messages held since before cutoff and returns them.
	Expire(cutoff time.Time) []Queued
}

// Limits bound what a Registry holds.
type Limits struct {
	Peers        int // registered ids
	QueuePerID   int // messages held for one absent id
	QueueBytes   int // bytes held for absent ids, in total
	BytesPerIP   int // bytes held from one source address (IPv6: one /64)
	BytesPerPeer int // bytes held for one absent id
}

// LimitsOf reads a Registry's limits from the [signal] section, for a Registry built
// outside this package (a fleet's).
func LimitsOf(c *config.Signal) Limits { return limitsOf(c) }

// limitsOf reads a Registry's limits from the [signal] section.
func limitsOf(c *config.Signal) Limits {
	return Limits{Peers: c.ConcurrentLimit, QueuePerID: c.MaxQueue, QueueBytes: c.MaxQueueBytes,
		BytesPerIP: c.MaxQueueBytesPerIP, BytesPerPeer: c.MaxQueueBytesPerPeer}
}

// queueOverhead is what a held message costs beyond its bytes and its destination id:
// the Queued value in its slice (with append's slack), the map entries of a queue
// and of a source, and the allocator's rounding. Counting it makes a flood of tiny
// messages hit the byte caps as a flood of large ones does.
const queueOverhead = 192

// cost is what q counts against the byte caps.
func cost(q *Queued) int { return len(q.Data) + len(q.Dst) + queueOverhead }

// sourceKey is the budget a sender's address counts against: the address, or for
// IPv6 its /64, since one host commonly holds a whole /64.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// memoryRegistry is the single-node Registry.
type memoryRegistry struct {
	mu      sync.Mutex
	lim     Limits
	peers   map[string]registered
	queues  map[string]*heldQueue
	bytes   int                // held over all ids
	sources map[netip.Addr]int // held per sourceKey
}

type registered struct {
	token string
	peer  Peer
}

// heldQueue is what waits for one absent id.
type heldQueue struct {
	msgs  []Queued
	bytes int
}

// NewMemoryRegistry returns a Registry for one node.
func NewMemoryRegistry(l Limits) Registry {
	return &memoryRegistry{lim: l, peers: make(map[string]registered), queues: make(map[string]*heldQueue),
		sources: make(map[netip.Addr]int)}
}

func (r *memoryRegistry) Register(id, token string, p Peer) (Peer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.peers[id]; ok {
		if cur.token != token {
			return nil, ErrIDTaken
		}
		r.peers[id] = registered{token: token, peer: p}
		return cur.peer, nil
	}
	if len(r.peers) >= r.lim.Peers {
		return nil, ErrFull
	}
	r.peers[id] = registered{token: token, peer: p}
	return nil, nil
}

func (r *memoryRegistry) Unregister(id string, p Peer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.peers[id]; ok && cur.peer == p {
		delete(r.peers, id)
		return true
	}
	return false
}

func (r *memoryRegistry) Lookup(id string) Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peers[id].peer
}

func (r *memoryRegistry) Taken(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.peers[id]
	return ok
}

func (r *memoryRegistry) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Keys(r.peers))
}

func (r *memoryRegistry) Enqueue(q Queued) bool {
	q.From = sourceKey(q.From)
	n := cost(&q)
	r.mu.Lock()
	defer r.mu.Unlock()
	hq := r.queues[q.Dst]
	held := 0
	if hq != nil {
		if len(hq.msgs) >= r.lim.QueuePerID {
			return false
		}
		held = hq.bytes
	} else if r.lim.QueuePerID < 1 {
		return false
	}
	if held+n > r.lim.BytesPerPeer || r.sources[q.From]+n > r.lim.BytesPerIP || r.bytes+n > r.lim.QueueBytes {
		return false
	}
	if hq == nil {
		hq = &heldQueue{}
		r.queues[q.Dst] = hq
	}
	hq.msgs = append(hq.msgs, q)
	hq.bytes += n
	r.sources[q.From] += n
	r.bytes += n
	return true
}

// forget takes a message that leaves the registry off the byte counts.
func (r *memoryRegistry) forget(q *Queued) {
	n := cost(q)
	r.bytes -= n
	if left := r.sources[q.From] - n; left > 0 {
		r.sources[q.From] = left
	} else {
		delete(r.sources, q.From)
	}
}

func (r *memoryRegistry) Drain(id string) []Queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	hq := r.queues[id]
	if hq == nil {
		return nil
	}
	delete(r.queues, id)
	for i := range hq.msgs {
		r.forget(&hq.msgs[i])
	}
	return hq.msgs
}

func (r *memoryRegistry) Expire(cutoff time.Time) []Queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Queued
	for id, hq := range r.queues {
		keep := hq.msgs[:0]
		for _, m := range hq.msgs {
			if m.At.Before(cutoff) {
				r.forget(&m)
				hq.bytes -= cost(&m)
				out = append(out, m)
			} else {
				keep = append(keep, m)
			}
		}
		clear(hq.msgs[len(keep):]) // the expired messages' bytes are not kept alive
		if len(keep) == 0 {
			delete(r.queues, id)
		} else {
			hq.msgs = keep
		}
	}
	return out
}

// setLimits changes the limits for registrations and queueing from now on; what is
// held already stays until drained or expired.
func (r *memoryRegistry) setLimits(l Limits) {
	r.mu.Lock()
	r.lim = l
	r.mu.Unlock()
}

// queueLen is how many messages wait for id.
func (r *memoryRegistry) queueLen(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if hq := r.queues[id]; hq != nil {
		return len(hq.msgs)
	}
	return 0
}

// queuedBytes is what the byte caps count: in total, from src's budget and for dst.
func (r *memoryRegistry) queuedBytes(src netip.Addr, dst string) (total, fromSrc, forDst int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if hq := r.queues[dst]; hq != nil {
		forDst = hq.bytes
	}
	return r.bytes, r.sources[sourceKey(src)], forDst
}
