package signaling

import (
	"errors"
	"sync"
	"time"
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
	Data     []byte // the encoded outbound message
	At       time.Time
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
	// Enqueue holds q for q.Dst; false if that queue is full.
	Enqueue(q Queued) bool
	// Drain returns and forgets the messages held for id, oldest first.
	Drain(id string) []Queued
	// Expire drops messages held since before cutoff and returns them.
	Expire(cutoff time.Time) []Queued
}

// memoryRegistry is the single-node Registry.
type memoryRegistry struct {
	limit, maxQueue int

	mu     sync.Mutex
	peers  map[string]registered
	queues map[string][]Queued
	queued int
}

type registered struct {
	token string
	peer  Peer
}

// maxQueuedTotal bounds memory held for absent peers over all ids.
const maxQueuedTotal = 100_000

// NewMemoryRegistry returns a Registry for one node with at most limit peers and
// maxQueue messages held per absent id.
func NewMemoryRegistry(limit, maxQueue int) Registry {
	return &memoryRegistry{limit: limit, maxQueue: maxQueue,
		peers: make(map[string]registered), queues: make(map[string][]Queued)}
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
	if len(r.peers) >= r.limit {
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
	ids := make([]string, 0, len(r.peers))
	for id := range r.peers {
		ids = append(ids, id)
	}
	return ids
}

func (r *memoryRegistry) Enqueue(q Queued) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queues[q.Dst]) >= r.maxQueue || r.queued >= maxQueuedTotal {
		return false
	}
	r.queues[q.Dst] = append(r.queues[q.Dst], q)
	r.queued++
	return true
}

func (r *memoryRegistry) Drain(id string) []Queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queues[id]
	delete(r.queues, id)
	r.queued -= len(q)
	return q
}

func (r *memoryRegistry) Expire(cutoff time.Time) []Queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Queued
	for id, q := range r.queues {
		keep := q[:0]
		for _, m := range q {
			if m.At.Before(cutoff) {
				out = append(out, m)
			} else {
				keep = append(keep, m)
			}
		}
		if len(keep) == 0 {
			delete(r.queues, id)
		} else {
			r.queues[id] = keep
		}
	}
	r.queued -= len(out)
	return out
}

// setLimits changes the limits for registrations and queueing from now on.
func (r *memoryRegistry) setLimits(limit, maxQueue int) {
	r.mu.Lock()
	r.limit, r.maxQueue = limit, maxQueue
	r.mu.Unlock()
}

// queueLen is how many messages wait for id.
func (r *memoryRegistry) queueLen(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queues[id])
}
