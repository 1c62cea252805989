// Package wsconn is relay's server side of WebSocket (RFC 6455): the opening handshake,
// frames, and connections that are read without a goroutine each. It knows nothing of
// what the messages mean: a Handler is told of each message and of the end of the
// connection, and writes through Conn.Send.
//
// On Linux a TCP socket is read by one of a few epoll pollers (poller_linux.go), so an
// idle connection holds no goroutine and no buffer. So is a TLS 1.3 one from
// NewTLSListener, whose records the poller opens and seals itself after crypto/tls's
// handshake (tlssock.go, tlsrecord.go). A TLS 1.2 socket, or any socket elsewhere, is
// read by a goroutine of its own (stream.go). Either way a message is
// written by whoever sends it, at once when nothing is waiting; what the socket does
// not take waits in a bounded outbox, so a slow client never blocks the sender.
package wsconn

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxOutbox bounds the frames one slow client can hold, as MaxOutboxBytes (and a
	// Budget) bound their bytes: a client this far behind is refused more (Send
	// returns false) rather than allowed to grow memory.
	maxOutbox = 256
	// WriteTimeout is how long writes may wait without progress before Check closes
	// the connection.
	WriteTimeout = 10 * time.Second
	// maxCoalesce bounds the bytes of queued frames gathered into one write.
	maxCoalesce = 64 << 10
)

// Handler is what a Conn tells its user. Its methods are called on the goroutine that
// reads the socket (a poller's, or the connection's own), one at a time.
type Handler interface {
	// MaxMessage is the longest message accepted, in bytes; a longer one fails the
	// connection with CloseTooBig.
	MaxMessage() int
	// Admit is asked for every frame the client sent, before it is acted on: control
	// frames (ping, pong, close) as well as messages, so that a flood of either is
	// bounded by one budget; on a wss socket read by a poller, each TLS KeyUpdate
	// counts as a control frame too. A frame not admitted is dropped (a close frame still
	// ends the connection).
	Admit(control bool) bool
	// OnMessage is a complete text or binary message; payload is valid only during
	// the call.
	OnMessage(op byte, payload []byte)
	// OnFail is told the close code the connection is failed with when the client
	// broke the protocol (CloseProtocolError, CloseTooBig, ...).
	OnFail(code int)
	// OnClose is called once the socket is closed, if the Conn was served.
	OnClose()
}

// Conn is one server-side WebSocket.
type Conn struct {
	h Handler

	// The socket: fd, read by the poller pl; or nc, read by its own goroutine. raw is
	// what Close closes on the goroutine path (under TLS, the TCP connection).
	pl  *poller
	fd  int
	nc  net.Conn
	raw net.Conn

	seen  atomic.Int64 // now() of the last frame received: any frame proves life
	stuck atomic.Int64 // now() of the last progress while writes wait; 0: none wait
	dead  atomic.Bool  // closed (set under mu, read without it)
	// closing: goroutine path, a close frame is being or has been written.
	closing atomic.Bool

	// Reader state, touched only by whoever reads the socket.
	rd      frameReader
	pong    []byte // the payload of the latest ping of this read, to be answered after it
	pongDue bool

	// tls is the TLS 1.3 record layer of a wss socket on a poller (tlsrecord.go); set
	// with pl.
	tls *tlsRecords

	mu      sync.Mutex
	outbox  []outFrame // frames waiting, at most maxOutbox
	pending []byte     // encoded bytes a short write left (poller path)
	armed   bool       // poller path: EPOLLOUT is requested
	held    bool       // Start has not been called: queue, do not write yet
	writing bool       // goroutine path: a writer goroutine is running
	closed  bool

	wmu sync.Mutex // goroutine path: one write on nc at a time

	// Under mu: the bytes of the outbox frames and of those a write has taken but not
	// finished, counted against MaxOutboxBytes and in budget (nil: no shared budget).
	outBytes int
	budget   *Budget
	key      netip.Addr
}

type outFrame struct {
	op byte
	b  []byte
}

// New wraps a socket Upgrade returned. Frames sent before Start wait in the outbox.
// conn may be nil for a Conn that is only fed (Feed), in benchmarks.
func New(conn net.Conn, h Handler) *Conn {
	if p, ok := conn.(*PeekedTLS); ok && len(p.prefix) == 0 {
		conn = p.Conn // net/http read the peeked bytes with the request
	}
	c := &Conn{h: h, fd: -1, nc: conn, raw: conn, held: true}
	if tc, ok := conn.(*tls.Conn); ok {
		c.raw = tc.NetConn()
	}
	c.seen.Store(now())
	return c
}

var epoch = time.Now()

// now is a monotonic clock in nanoseconds, for liveness.
func now() int64 { return int64(time.Since(epoch)) }

// Account makes c's outbox count against b under key (with the other connections of
// the same key, and all of b's). Call it before Serve.
func (c *Conn) Account(b *Budget, key netip.Addr) { c.budget, c.key = b, key }

// takeLocked counts n more outbox bytes; false, counting nothing, if they do not fit
// (force: count them anyway).
func (c *Conn) takeLocked(n int, force bool) bool {
	if !force && c.outBytes > 0 && c.outBytes+n > MaxOutboxBytes {
		return false
	}
	if c.budget != nil && !c.budget.take(c.key, n, force) {
		return false
	}
	c.outBytes += n
	return true
}

// releaseLocked takes n bytes that left the outbox (written, or dropped on close) off
// the counts.
func (c *Conn) releaseLocked(n int) {
	if n > 0 {
		c.outBytes -= n
		if c.budget != nil {
			c.budget.give(c.key, n)
		}
	}
}

// Held is the bytes c holds for its socket: frames waiting and what a short write left.
func (c *Conn) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.pending)
	for _, f := range c.outbox {
		n += len(f.b)
	}
	return n
}

// Serve starts reading: on a poller of ps when the socket is TCP on Linux, plain or
// TLS 1.3 from NewTLSListener; otherwise on a goroutine of its own. buffered is what
// Upgrade read past the handshake; it is handled first. Serve returns at once; the
// Handler's OnClose tells when the connection has ended.
func (c *Conn) Serve(ps *Pollers, buffered []byte) {
	if ps.take(c, buffered) {
		return
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		if s, ok := tc.NetConn().(*tlsSock); ok {
			s.passThrough() // the goroutine reads through tls.Conn
		}
	}
	go c.readStream(buffered)
}

// OnPoller reports whether a poller reads the socket (no goroutine of its own).
func (c *Conn) OnPoller() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pl != nil
}

// Send queues b as a text message; false if the connection is closed or too far
// behind.
func (c *Conn) Send(b []byte) bool { return c.queue(OpText, b) }

// Ping queues a ping; browsers answer with a pong, which counts as life.
func (c *Conn) Ping() { c.queue(OpPing, nil) }

func (c *Conn) queue(op byte, b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queueLocked(op, b)
}

// queuePong answers the latest ping. A pong still waiting in the outbox takes the new
// payload instead of a second pong going out: RFC 6455 5.5.3 lets an endpoint answer
// only the most recent of several pings, and a client pinging faster than it reads
// then costs one frame, not one per ping.
func (c *Conn) queuePong(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.outbox) - 1; i >= 0; i-- {
		if c.outbox[i].op == OpPong {
			// A pong payload is at most 125 bytes: counted even past the caps.
			c.takeLocked(len(b), true)
			c.releaseLocked(len(c.outbox[i].b))
			c.outbox[i].b = b
			return
		}
	}
	c.queueLocked(OpPong, b)
}

func (c *Conn) queueLocked(op byte, b []byte) bool {
	if c.closed {
		return false
	}
	if c.pl != nil && !c.held && len(c.outbox) == 0 && len(c.pending) == 0 {
		c.writeFrameLocked(op, b)
		return true
	}
	if len(c.outbox) >= maxOutbox || !c.takeLocked(len(b), false) {
		return op != OpText // a control frame that does not fit is skipped
	}
	c.outbox = append(c.outbox, outFrame{op, b})
	if c.pl == nil && !c.held && !c.writing {
		c.writing = true
		go c.writeStream()
	}
	return true
}

// Start ends the hold: first goes out first, then what was queued meanwhile, then
// queued.
func (c *Conn) Start(first []byte, queued [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	out := make([]outFrame, 0, 1+len(c.outbox)+len(queued))
	out = append(out, outFrame{OpText, first})
	out = append(out, c.outbox...)
	n := len(first)
	for _, b := range queued {
		out = append(out, outFrame{OpText, b})
		n += len(b)
	}
	c.outbox = out
	// Counted even past the caps: what waited for this client is bounded where it
	// waited, and a client is not to be dropped for the messages held for it.
	c.takeLocked(n, true)
	c.held = false
	if c.pl != nil {
		c.flushLocked()
	} else if !c.writing {
		c.writing = true
		go c.writeStream()
	}
}

// Closed reports whether the connection is closed or closing.
func (c *Conn) Closed() bool { return c.dead.Load() }

// Close ends the connection. On the poller path the poller then closes the socket and
// calls OnClose; on the goroutine path its reader does.
func (c *Conn) Close() {
	c.mu.Lock()
	c.closeLocked()
	c.mu.Unlock()
}

func (c *Conn) closeLocked() {
	if c.closed {
		return
	}
	c.closed = true
	c.dead.Store(true)
	c.releaseLocked(c.outBytes)
	c.outbox, c.pending = nil, nil
	c.stuck.Store(0)
	if c.fd >= 0 {
		shutdownFd(c.fd) // the poller sees the hang-up and finishes
	} else if c.raw != nil {
		_ = c.raw.Close()
	}
}

// CloseWith sends a close frame with code (best effort) and closes.
func (c *Conn) CloseWith(code int) { c.closeWith(closePayload(code)) }

// closeWith sends a close frame with payload (best effort) and closes.
func (c *Conn) closeWith(payload []byte) {
	c.mu.Lock()
	onPoller := c.pl != nil
	c.mu.Unlock()
	if !onPoller {
		// The close frame must be the last frame: the writer goroutine writes nothing
		// once closing is set. A write of its in progress is cut short to a second.
		c.closing.Store(true)
		if c.nc != nil {
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			c.wmu.Lock()
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.nc.Write(appendFrame(nil, OpClose, payload))
			c.wmu.Unlock()
		}
		c.Close()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && len(c.pending) == 0 {
		c.writeFrameLocked(OpClose, payload)
		if c.tls != nil {
			c.alertLocked(alertCloseNotify)
		}
	}
	c.closeLocked()
}

// Check is the liveness rule, for a sweep over all connections: it closes c if the
// client has sent nothing for alive, or if writes have waited without progress for
// WriteTimeout; otherwise it pings when ping is set.
func (c *Conn) Check(alive time.Duration, ping bool) {
	t := now()
	c.mu.Lock()
	if c.tls != nil {
		c.tls.idle()
	}
	c.mu.Unlock()
	switch stuck := c.stuck.Load(); {
	case time.Duration(t-c.seen.Load()) > alive:
		c.Close()
	case stuck != 0 && time.Duration(t-stuck) > WriteTimeout:
		c.Close()
	case ping:
		c.Ping()
	}
}

// Feed handles bytes as if read from the socket, on the caller's goroutine; false once
// the connection is ending. Only for a Conn nobody else reads (benchmarks).
func (c *Conn) Feed(data []byte) bool { return c.consume(data) }

// consume handles bytes read from the client; false once the connection is ending.
func (c *Conn) consume(data []byte) bool {
	code := c.rd.feed(data, c.h.MaxMessage(), c.frame)
	if code != 0 {
		c.pong, c.pongDue = nil, false
		c.h.OnFail(code)
		c.closeWith(closePayload(code))
		return false
	}
	if c.pongDue {
		// One pong for all the pings of this read, answering the last.
		c.queuePong(c.pong)
		c.pong, c.pongDue = nil, false
	}
	return !c.dead.Load()
}

// frame handles one frame or message. Any frame proves life.
func (c *Conn) frame(op byte, payload []byte) bool {
	c.seen.Store(now())
	switch op {
	case OpPing:
		// A ping not admitted (over the rate) is not answered.
		if c.h.Admit(true) {
			c.pong, c.pongDue = append(c.pong[:0], payload...), true
		}
	case OpPong:
		c.h.Admit(true)
	case OpClose:
		c.h.Admit(true)
		// Answer the close handshake with the client's code (the reader let only valid
		// ones through), or with none, then close.
		if len(payload) >= 2 {
			payload = payload[:2]
		}
		c.closeWith(payload)
		return false
	default:
		if c.h.Admit(false) {
			c.h.OnMessage(op, payload)
		}
	}
	return !c.dead.Load()
}

// writeStream drains the outbox on the goroutine path, all waiting frames in one write.
func (c *Conn) writeStream() {
	for {
		c.mu.Lock()
		if c.closed || len(c.outbox) == 0 {
			c.outbox = nil // release the backing array while idle
			c.writing = false
			c.mu.Unlock()
			return
		}
		frames := c.outbox
		c.outbox = nil
		// The frames stay counted until written: a writer stuck in a write holds them.
		var inflight int
		for _, f := range frames {
			inflight += len(f.b)
		}
		c.mu.Unlock()

		buf := getScratch()
		for _, f := range frames {
			*buf = appendFrame(*buf, f.op, f.b)
		}
		c.wmu.Lock()
		var err error
		if !c.closing.Load() { // a close frame went out: nothing may follow it
			_ = c.nc.SetWriteDeadline(time.Now().Add(WriteTimeout))
			_, err = c.nc.Write(*buf)
		}
		c.wmu.Unlock()
		putScratch(buf)
		if err != nil {
			c.Close()
		}
		c.mu.Lock()
		if !c.closed { // closing released every byte
			c.releaseLocked(inflight)
		}
		c.mu.Unlock()
	}
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
