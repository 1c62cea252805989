package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/relayproject/relay/internal/rawudp"
	"github.com/relayproject/relay/metrics"
)

// batchSize is how many datagrams one read of a UDP listener may return (recvmmsg(2)),
// and how many answers wait to go out together.
const batchSize = 32

// packetConn is a UDP listener socket as pion sees it: reads pass through the gate first,
// and what pion writes to clients is counted on the way out.
type packetConn struct {
	*net.UDPConn
	rc     syscall.RawConn // for batched sends
	family rawudp.Family   // how destinations are written (IPv4 clients of a dual-stack socket are mapped)
	s      *Server
	ctr    *counters
	gate   *gate
	batch  *rawudp.Reader
	done   func() // called once when the read loop ends
	once   sync.Once

	// Answers the gate gives (Binding responses, refusals) wait here while datagrams of
	// the same recvmmsg batch are handled, then go out with one sendmmsg(2).
	replies   sendBatch
	replyBufs [batchSize][]byte
	nReplies  int
}

func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if c.nReplies > 0 && !c.batch.Buffered() {
			c.flushReplies() // the batch is done: answer before waiting for more
		}
		b, from, err := c.batch.Next()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// pion ends its read loop on any error, which would silence this socket for
				// good; a failed read of one datagram must not.
				c.ctr.listenerError(c.gate.transport)
				continue
			}
			c.once.Do(c.done)
			return 0, nil, err
		}
		if c.gate.inspect(b, from, c) {
			// Control traffic for pion; a datagram longer than its buffer is cut, and
			// pion drops what fills its buffer completely.
			c.flushReplies()
			return copy(p, b), net.UDPAddrFromAddrPort(from), nil
		}
	}
}

func (c *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	p = c.gate.withAddressError(p)
	c.s.countOutgoing(p)
	if secs, ok := responseLifetime(p); ok {
		c.s.allocs.setExpiry(tupleKey{client: addrPortOf(addr), local: c.gate.local}, secs)
	}
	n, err := c.UDPConn.WriteTo(p, addr)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.ctr.listenerError(c.gate.transport)
	}
	return n, err
}

// reply queues an answer of the gate's; ReadFrom sends the queue when the datagrams
// read with it are handled.
func (c *packetConn) reply(b []byte, to netip.AddrPort) {
	c.s.countResponse(b)
	if c.nReplies == len(c.replyBufs) {
		c.flushReplies()
	}
	buf := append(c.replyBufs[c.nReplies][:0], b...)
	c.replyBufs[c.nReplies] = buf
	c.nReplies++
	c.replies.add(c, buf, to, notRelayed)
}

func (c *packetConn) flushReplies() {
	c.replies.flush()
	c.nReplies = 0
}

// streamListener accepts TCP or TLS clients for pion and remembers them, so that Close
// can end connections pion would otherwise leave open.
type streamListener struct {
	net.Listener
	s         *Server
	transport string
	tlsConfig *tls.Config // nil for plain TCP
	gen       *familyGen  // the relay address generator pion has for this listener

	mu     sync.Mutex
	conns  map[*streamConn]struct{}
	closed bool
}

func (l *streamListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// pion stops accepting on any error; out of file descriptors (EMFILE) must
			// only pause the listener, as net/http does.
			l.s.counters.listenerError(l.transport)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		local := addrPortOf(c.LocalAddr())
		remote := addrPortOf(c.RemoteAddr())
		sc := &streamConn{Conn: c, l: l, ctr: l.s.counters, remote: remote, gate: newGate(l.s, l.transport, local, true)}
		sc.gate.gen = l.gen // one per listener: pion has one generator per listener
		if l.tlsConfig != nil {
			sc.tls = tls.Server(c, l.tlsConfig)
			sc.Conn = sc.tls
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.conns[sc] = struct{}{}
		l.mu.Unlock()
		return sc, nil
	}
}

// closeAll ends every accepted connection (pion only closes the listener).
func (l *streamListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := make([]*streamConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// tlsHandshakeTimeout bounds how long a TLS client may take to finish its handshake.
const tlsHandshakeTimeout = 10 * time.Second

// streamIdleTimeout is how long a TCP/TLS connection without an allocation may go
// without completing a message before it is closed: a client that connects (or, on a
// shared port, sends the one byte that routes it to TURN) and then stalls does not
// hold its socket, goroutine and buffer for good. A connection with an allocation
// waits as long as the allocation lives (its client refreshes it); once pion deletes
// it, the connection is idle again. A variable for tests.
var streamIdleTimeout = 30 * time.Second

// streamConn frames a TCP/TLS byte stream into TURN messages (RFC 8656 §7.2) and hands
// pion exactly one message per Read, after the gate has seen it.
type streamConn struct {
	net.Conn
	l      *streamListener
	ctr    *counters
	tls    *tls.Conn
	remote netip.AddrPort
	gate   *gate

	handshaken bool
	alloc      *allocation // this connection's allocation, once it has one (fill)
	idleArmed  bool        // a read deadline of streamIdleTimeout is set
	buf        []byte      // unconsumed bytes are buf[start:end]
	start, end int
	writeMu    sync.Mutex
	closeOnce  sync.Once
	out        streamOutbox // ChannelData from peers (streamout.go)
}

// Read returns the next frame for pion. When it fails, pion ends this connection's read
// loop and deletes its allocation, so the allocation log learns why first.
func (c *streamConn) Read(p []byte) (int, error) {
	c.gate.handled() // pion is done with the last frame: not held while the client is silent
	n, err := c.read(p)
	if err != nil {
		c.l.s.allocs.markEnding(tupleKey{client: c.remote, local: c.gate.local, stream: true}, endConnClose)
	}
	return n, err
}

func (c *streamConn) read(p []byte) (int, error) {
	if c.tls != nil && !c.handshaken {
		ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
		err := c.tls.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return 0, err
		}
		c.handshaken = true
		if c.tls.ConnectionState().NegotiatedProtocol == acmeALPN {
			return 0, io.EOF // an ACME validation: the certificate was the answer
		}
	}
	if c.buf == nil {
		c.buf = make([]byte, 2*maxStreamFrameBytes)
	}
	for {
		size, err := streamFrameSize(c.buf[c.start:c.end])
		if err != nil {
			return 0, err
		}
		if size > maxStreamFrameBytes {
			return 0, errBadFrame
		}
		if size == 0 || c.end-c.start < size {
			if err := c.fill(); err != nil {
				return 0, err
			}
			continue
		}
		frame := c.buf[c.start : c.start+size]
		c.start += size
		if !c.gate.inspect(frame, c.remote, c) {
			continue
		}
		if len(frame) > len(p) {
			// Longer than pion's buffer: dropped (as pion drops one that fills it), and
			// what the gate reserved for it given back now, not when the next frame comes.
			c.gate.handled()
			c.ctr.dropped[dropMalformedIdx].Inc()
			continue
		}
		return copy(p, frame), nil
	}
}

// fill reads more bytes, first moving what is left to the front of the buffer.
func (c *streamConn) fill() error {
	if c.start > 0 {
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	c.armIdle()
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = errors.New("relay: empty read")
	}
	return err
}

// armIdle sets the read deadline of a connection without an allocation: streamIdleTimeout
// from the last complete message (a message that trickles in gets no more time), none
// once it has an allocation. With one, this is an atomic load per read.
func (c *streamConn) armIdle() {
	if c.alloc != nil && !c.alloc.dead.Load() {
		return
	}
	c.alloc = c.l.s.allocs.lookup(tupleKey{client: c.remote, local: c.gate.local, stream: true})
	if c.alloc != nil {
		// Once per allocation: this also clears the deadline allocationEnded set.
		c.idleArmed = false
		_ = c.Conn.SetReadDeadline(time.Time{})
		return
	}
	if !c.idleArmed || c.start == c.end {
		c.idleArmed = true
		_ = c.Conn.SetReadDeadline(time.Now().Add(streamIdleTimeout))
	}
}

// allocationEnded starts the idle wait of a connection whose allocation pion deleted
// (expired, or released) while its read waits with no deadline. Any goroutine.
func (c *streamConn) allocationEnded() {
	_ = c.Conn.SetReadDeadline(time.Now().Add(streamIdleTimeout))
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.gate.releaseFamily() // pion is answering: before a write that may wait for the client
	p = c.gate.withAddressError(p)
	c.l.s.countOutgoing(p)
	if secs, ok := responseLifetime(p); ok {
		c.l.s.allocs.setExpiry(tupleKey{client: c.remote, local: c.gate.local, stream: true}, secs)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.Conn.Write(p)
}

func (c *streamConn) reply(b []byte, _ netip.AddrPort) {
	c.l.s.countResponse(b)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_, _ = c.Conn.Write(b)
}

func (c *streamConn) Close() error {
	c.gate.releaseFamily()
	c.closeOutbox()
	err := c.Conn.Close()
	if c.l.transport == metrics.TransportTLS && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		// The client left first and the TLS close-notify found no one to tell: the
		// connection is closed all the same, as it should be.
		err = nil
	}
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
