package cluster

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/signaling"
)

// Messages for other nodes leave through one outbox per Registry, never by a Redis call
// on the caller's goroutine: a signaling poller that waited a round trip per message
// held up every peer it serves (p99 delivery near 200 ms at 20,000 messages/s). The
// publisher goroutine takes everything pending, one batch per destination node, and
// sends all batches in one pipelined round trip; what arrives meanwhile forms the next
// batches. At low rates a batch is one frame sent at once; under load batches grow and
// the cost per message (system calls, Redis commands, wake-ups on both sides) falls.
//
// A batch is the payload of one PUBLISH: kindBatch, then frames, each as its length
// (uvarint) and the frame: kind, the id's length (uvarint), the id, the body.
const kindBatch = 'b'

// Outbox caps, in bytes of frames: in total, and per sender address so that one
// client's peers cannot fill it for everyone. Past a cap Send reports false and the
// sender is told the peer left, as for a slow local peer. They bound memory while Redis
// is slow; at the signaling rate limits a healthy backend keeps them nearly empty.
const (
	outboxBytes        = 8 << 20
	outboxBytesPerAddr = 1 << 20
)

type outbox struct {
	mu     sync.Mutex
	byNode map[string]*batch
	order  []*batch // batches in the order their first frame came
	bytes  int
	byAddr map[netip.Addr]int
	wake   chan struct{}
}

type batch struct {
	node   string
	buf    []byte
	frames int
	addrs  []addrBytes // what each sender address has in buf, given back when sent
}

type addrBytes struct {
	addr netip.Addr
	n    int
}

func newOutbox() outbox {
	return outbox{byNode: make(map[string]*batch), byAddr: make(map[netip.Addr]int), wake: make(chan struct{}, 1)}
}

// post queues one frame for node; false when a cap says no. from is the sender's
// address (the zero Addr for frames the node itself makes, which count in the total only).
func (r *Registry) post(node string, kind byte, id string, body []byte, from netip.Addr) bool {
	if !r.up.Load() {
		return false
	}
	flen := 1 + uvarintLen(uint64(len(id))) + len(id) + len(body)
	n := uvarintLen(uint64(flen)) + flen
	o := &r.out
	o.mu.Lock()
	if o.bytes+n > outboxBytes || (from.IsValid() && o.byAddr[from]+n > outboxBytesPerAddr) {
		o.mu.Unlock()
		return false
	}
	b := o.byNode[node]
	if b == nil {
		b = &batch{node: node, buf: append(make([]byte, 0, 1+n), kindBatch)}
		o.byNode[node] = b
		o.order = append(o.order, b)
	}
	b.buf = binary.AppendUvarint(b.buf, uint64(flen))
	b.buf = append(b.buf, kind)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(id)))
	b.buf = append(b.buf, id...)
	b.buf = append(b.buf, body...)
	b.frames++
	o.bytes += n
	if from.IsValid() {
		o.byAddr[from] += n
		if k := len(b.addrs); k > 0 && b.addrs[k-1].addr == from {
			b.addrs[k-1].n += n
		} else {
			b.addrs = append(b.addrs, addrBytes{from, n})
		}
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// take hands over everything pending and gives its bytes back to the caps.
func (o *outbox) take() []*batch {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.order) == 0 {
		return nil
	}
	bs := o.order
	o.order = nil
	clear(o.byNode)
	for _, b := range bs {
		o.bytes -= len(b.buf) - 1
		for _, a := range b.addrs {
			if o.byAddr[a.addr] -= a.n; o.byAddr[a.addr] <= 0 {
				delete(o.byAddr, a.addr)
			}
		}
	}
	return bs
}

// publisher sends the outbox's batches until ctx ends. It never waits to fill a batch:
// what arrives during one round trip is the next batch. (Lingering 1 ms between round
// trips under load made batches ten times larger and Redis's CPU smaller, but the nodes'
// CPU per message larger: bench -mode fleet, 24.7-26.8 µs against 21.4-22.3.)
func (r *Registry) publisher(ctx context.Context) {
	defer r.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.out.wake:
		}
		for bs := r.out.take(); len(bs) > 0; bs = r.out.take() {
			r.flush(bs)
		}
	}
}

// flush publishes bs in one round trip. A batch no node received (its node is gone) or
// that could not be sent (Redis is down) is not lost silently: each message in it is
// held for its id as for an absent peer, which EXPIREs back to the sender if the id does
// not come back, or, with Redis down, the sender on this node gets EXPIRE at once.
func (r *Registry) flush(bs []*batch) {
	ctx, cancel := r.ctx()
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(bs))
	for i, b := range bs {
		cmds[i] = pipe.Publish(ctx, r.prefix+keyChannel+b.node, b.buf)
	}
	_, err := pipe.Exec(ctx)
	cancel()
	r.note(err)
	for i, b := range bs {
		if n, err := cmds[i].Result(); err == nil && n > 0 {
			r.CrossNodeSent.Add(int64(b.frames))
			continue
		}
		eachFrame(string(b.buf[1:]), func(kind byte, id, body string) {
			if kind != 'm' && kind != 'f' {
				return
			}
			r.forget(id)
			// The owner cache pointed at a node that is gone; the peer may be elsewhere now.
			if r.up.Load() {
				switch node := r.owner(id); {
				case node == r.node:
					r.deliver('f', id, body)
					return
				case node != "" && node != b.node && r.post(node, 'f', id, []byte(body), netip.Addr{}):
					return
				}
			}
			q := signaling.Queued{Dst: id, Data: []byte(body), At: time.Now()}
			q.Src = srcOf(q.Data)
			r.Enqueue(q)
		})
	}
}

// eachFrame calls f for every well-formed frame of a batch's frames (the payload after
// kindBatch) and stops at the first malformed one.
func eachFrame(p string, f func(kind byte, id, body string)) {
	for len(p) > 0 {
		n, w := uvarint(p)
		if w <= 0 || n > uint64(len(p)-w) {
			return
		}
		frame := p[w : w+int(n)]
		p = p[w+int(n):]
		kind, id, body, ok := splitFrame(frame)
		if !ok {
			return
		}
		f(kind, id, body)
	}
}

// splitFrame reads one frame: kind, the id's length (uvarint), the id, the body. The
// length, not a separator, ends the id: ids are the clients' own strings and may hold
// any byte, and one must never shift where the body starts.
func splitFrame(frame string) (kind byte, id, body string, ok bool) {
	if len(frame) < 2 {
		return 0, "", "", false
	}
	n, w := uvarint(frame[1:])
	if w <= 0 || n > uint64(len(frame)-1-w) {
		return 0, "", "", false
	}
	return frame[0], frame[1+w : 1+w+int(n)], frame[1+w+int(n):], true
}

// uvarint is binary.Uvarint over a string, without copying it.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -(i + 1)
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
