package signaling

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayproject/relay/config"
)

const (
	// maxOutbox bounds what one slow client can hold: a peer this far behind is closed
	// rather than allowed to grow memory or block anyone else.
	maxOutbox    = 256
	writeTimeout = 10 * time.Second
	// maxCoalesce bounds the bytes of queued frames gathered into one write.
	maxCoalesce = 64 << 10
)

// The outbox is capped in bytes too: per peer (one frame always fits, whatever its
// size, so that a single large message is sent), and over the peers at one address
// (IPv6: one /64) and over all peers, so that many stalled sockets cannot add up to
// unbounded memory. A peer whose frame does not fit is dropped as a slow consumer.
const (
	maxOutboxBytes      = 1 << 20
	maxOutboxBytesPerIP = 8 << 20
	maxOutboxBytesTotal = 64 << 20
)

// peerConn is one client WebSocket. On Linux a plain TCP socket is read by a poller
// (poller_linux.go): an idle peer is this struct and nothing else, no goroutine and no
// buffer. A TLS socket, or any socket elsewhere, is read by a goroutine of its own
// (stream.go). Either way a message is written by whoever routes it, at once when
// nothing is waiting; what the socket does not take waits in a bounded outbox, so a
// slow peer never blocks the one that sends to it.
type peerConn struct {
	s         *Server
	id, token string
	ip        netip.Addr
	budget    netip.Addr // sourceKey(ip): the outbox budget this peer counts against

	// The socket: fd, read by the poller pl; or nc, read by its own goroutine. raw is
	// what Close closes on the goroutine path (under TLS, the TCP connection).
	pl  *poller
	fd  int
	nc  net.Conn
	raw net.Conn

	seen  atomic.Int64 // Server.now of the last frame received: any frame proves life
	stuck atomic.Int64 // Server.now of the last progress while writes wait; 0: none wait
	dead  atomic.Bool  // closed (set under mu, read without it)

	// Reader state, touched only by whoever reads the socket.
	rd     frameReader
	tokens float64 // message token bucket
	last   int64

	mu      sync.Mutex
	outbox  []outFrame // frames waiting, at most maxOutbox
	pending []byte     // encoded bytes a short write left (poller path)
	armed   bool       // poller path: EPOLLOUT is requested
	held    bool       // the handshake has not finished: queue, do not write yet
	writing bool       // goroutine path: a writer goroutine is running
	closed  bool

	wmu sync.Mutex // goroutine path: one write on nc at a time

	// Under mu: the bytes of the outbox frames and of those a writer goroutine is
	// writing, counted against maxOutboxBytes and in s.outboxes.
	outBytes int
}

type outFrame struct {
	op byte
	b  []byte
}

func newPeerConn(s *Server, conn net.Conn, id, token string, ip netip.Addr) *peerConn {
	p := &peerConn{s: s, id: id, token: token, ip: ip, budget: sourceKey(ip), fd: -1, nc: conn, raw: conn, held: true}
	if tc, ok := conn.(*tls.Conn); ok {
		p.raw = tc.NetConn()
	}
	now := s.now()
	p.seen.Store(now)
	p.tokens, p.last = 4*float64(s.conf().MessagesPerSecond), now
	return p
}

// Send queues b as a text message; false if the peer is closed or too far behind.
func (p *peerConn) Send(b []byte) bool { return p.queue(opText, b) }

// ping queues a WebSocket ping; browsers answer with a pong, which counts as life.
func (p *peerConn) ping() { p.queue(opPing, nil) }

func (p *peerConn) queue(op byte, b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.pl != nil && !p.held && len(p.outbox) == 0 && len(p.pending) == 0 {
		p.writeFrameLocked(op, b)
		return true
	}
	if len(p.outbox) >= maxOutbox || (p.outBytes > 0 && p.outBytes+len(b) > maxOutboxBytes) ||
		!p.s.outboxes.take(p.budget, len(b), false) {
		return op != opText // a control frame that does not fit is skipped
	}
	p.outBytes += len(b)
	p.outbox = append(p.outbox, outFrame{op, b})
	if p.pl == nil && !p.held && !p.writing {
		p.writing = true
		go p.writeStream()
	}
	return true
}

// start ends the handshake: OPEN goes first, then what was queued meanwhile.
func (p *peerConn) start(open []byte, queued [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	out := make([]outFrame, 0, 1+len(p.outbox)+len(queued))
	out = append(out, outFrame{opText, open})
	out = append(out, p.outbox...)
	n := len(open)
	for _, b := range queued {
		out = append(out, outFrame{opText, b})
		n += len(b)
	}
	p.outbox = out
	// Counted even past the caps: the registry's caps bound them already, and a peer
	// is not to be dropped for the messages that waited for it.
	p.s.outboxes.take(p.budget, n, true)
	p.outBytes += n
	p.held = false
	if p.pl != nil {
		p.flushLocked()
	} else if !p.writing {
		p.writing = true
		go p.writeStream()
	}
}

// Close ends the connection. On the poller path the poller then closes the socket and
// releases the peer; on the goroutine path its reader does.
func (p *peerConn) Close() {
	p.mu.Lock()
	p.closeLocked()
	p.mu.Unlock()
}

func (p *peerConn) closeLocked() {
	if p.closed {
		return
	}
	p.closed = true
	p.dead.Store(true)
	p.releaseLocked(p.outBytes)
	p.outbox, p.pending = nil, nil
	p.stuck.Store(0)
	if p.fd >= 0 {
		shutdownFd(p.fd) // the poller sees the hang-up and finishes
	} else if p.raw != nil {
		_ = p.raw.Close()
	}
}

// closeWith sends a close frame with payload (best effort) and closes.
func (p *peerConn) closeWith(payload []byte) {
	if p.pl == nil {
		// The writer goroutine may be in a long write: then the close frame is skipped.
		if p.wmu.TryLock() {
			_ = p.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = p.nc.Write(appendFrame(nil, opClose, payload))
			p.wmu.Unlock()
		}
		p.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed && len(p.pending) == 0 {
		p.writeFrameLocked(opClose, payload)
	}
	p.closeLocked()
}

// consume handles bytes read from the client; false once the connection is ending.
func (p *peerConn) consume(data []byte) bool {
	now, c := p.s.now(), p.s.conf()
	code := p.rd.feed(data, c.MaxMessageBytes, func(op byte, payload []byte) bool {
		return p.frame(op, payload, now, c)
	})
	if code != 0 {
		if code == closeTooBig {
			p.s.metrics.SignalRejected.WithLabelValues("message_too_large").Inc()
		}
		p.closeWith(closePayload(code))
		return false
	}
	return !p.dead.Load()
}

// frame handles one frame or message. Any frame proves life.
func (p *peerConn) frame(op byte, payload []byte, now int64, c *config.Signal) bool {
	p.seen.Store(now)
	switch op {
	case opPing:
		p.queue(opPong, bytes.Clone(payload))
	case opPong:
	case opClose:
		// Answer the close handshake with the client's code, then close.
		switch len(payload) {
		case 0:
			p.closeWith(nil)
		case 1:
			p.closeWith(closePayload(closeProtocolError))
		default:
			p.closeWith(payload[:2])
		}
		return false
	default:
		// A token bucket of messages: a call's candidates come in a burst, a flood does
		// not stop. Excess messages are dropped, not queued.
		rate := float64(c.MessagesPerSecond)
		p.tokens = min(4*rate, p.tokens+float64(now-p.last)/float64(time.Second)*rate)
		p.last = now
		if p.tokens < 1 {
			p.s.metrics.SignalRejected.WithLabelValues("rate").Inc()
			return true
		}
		p.tokens--
		if op == opText {
			p.s.handle(p, payload)
		}
	}
	return !p.dead.Load()
}

// writeStream drains the outbox on the goroutine path, all waiting frames in one write.
func (p *peerConn) writeStream() {
	for {
		p.mu.Lock()
		if p.closed || len(p.outbox) == 0 {
			p.outbox = nil // release the backing array while idle
			p.writing = false
			p.mu.Unlock()
			return
		}
		frames := p.outbox
		p.outbox = nil
		// The frames stay counted until written: a writer stuck in a write holds them.
		inflight := p.outBytes
		p.mu.Unlock()

		buf := getScratch()
		for _, f := range frames {
			*buf = appendFrame(*buf, f.op, f.b)
		}
		p.wmu.Lock()
		_ = p.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := p.nc.Write(*buf)
		p.wmu.Unlock()
		putScratch(buf)
		if err != nil {
			p.Close()
		}
		p.mu.Lock()
		if !p.closed { // closing released every byte
			p.releaseLocked(inflight)
		}
		p.mu.Unlock()
	}
}

// releaseLocked takes n bytes that left the outbox (written, or dropped on close) off
// the counts.
func (p *peerConn) releaseLocked(n int) {
	if n > 0 {
		p.outBytes -= n
		p.s.outboxes.give(p.budget, n)
	}
}

// outboxBudget counts the bytes in outboxes per budget key (the receiving peer's
// address, or its /64) and in total.
type outboxBudget struct {
	mu    sync.Mutex
	perIP map[netip.Addr]int
	total int
}

// take counts n bytes for key; false, counting nothing, if a cap would be passed,
// unless force.
func (b *outboxBudget) take(key netip.Addr, n int, force bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !force && (b.perIP[key]+n > maxOutboxBytesPerIP || b.total+n > maxOutboxBytesTotal) {
		return false
	}
	if b.perIP == nil {
		b.perIP = make(map[netip.Addr]int)
	}
	b.perIP[key] += n
	b.total += n
	return true
}

func (b *outboxBudget) give(key netip.Addr, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if left := b.perIP[key] - n; left > 0 {
		b.perIP[key] = left
	} else {
		delete(b.perIP, key)
	}
}

// bytes is what is counted in total and for key.
func (b *outboxBudget) bytes(key netip.Addr) (total, forKey int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total, b.perIP[key]
}

var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// getScratch returns an empty buffer to encode frames into; putScratch takes it back.
func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

func putScratch(b *[]byte) {
	if cap(*b) <= 4*maxCoalesce {
		*b = (*b)[:0]
		scratchPool.Put(b)
	}
}
