package relay

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// ChannelData for TCP and TLS clients does not go out on the poller that read it: a
// client that stops reading would fill its socket and stall every allocation on that
// poller. It waits in the connection's bounded outbox instead, written by a goroutine
// that exists only while the outbox is not empty. A client this far behind loses data
// (counted as dropped, reason backlog), as it would over UDP.

const (
	maxStreamOutbox    = 256 // datagrams waiting for one TCP/TLS client
	streamWriteTimeout = 10 * time.Second
)

var errStreamBacklog = errors.New("relay: TCP client too far behind")

// streamBufs holds ChannelData copies for stream outboxes, so the steady state
// allocates nothing.
var streamBufs = sync.Pool{New: func() any { b := make([]byte, 0, relayBufSize); return &b }}

type streamOutbox struct {
	mu      sync.Mutex
	q       []*[]byte
	writing bool
	closed  bool
}

// sendChannelData queues a ChannelData message (header included) for a TCP/TLS client,
// padded to a multiple of 4 bytes as stream transports require (RFC 8656 §12.5). It
// never blocks.
func (c *streamConn) sendChannelData(b []byte, _ netip.AddrPort) error {
	o := &c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errStreamBacklog
	}
	if len(o.q) >= maxStreamOutbox {
		c.ctr.dropped[dropBacklogIdx].Inc()
		return errStreamBacklog
	}
	bp := streamBufs.Get().(*[]byte)
	buf := append((*bp)[:0], b...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	*bp = buf
	o.q = append(o.q, bp)
	if !o.writing {
		o.writing = true
		go c.flushOutbox()
	}
	return nil
}

func (c *streamConn) flushOutbox() {
	o := &c.out
	for {
		o.mu.Lock()
		if len(o.q) == 0 || o.closed {
			for _, bp := range o.q {
				streamBufs.Put(bp)
			}
			o.q, o.writing = nil, false
			o.mu.Unlock()
			return
		}
		bp := o.q[0]
		o.q[0] = nil
		o.q = o.q[1:]
		o.mu.Unlock()

		c.writeMu.Lock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		_, err := c.Conn.Write(*bp)
		_ = c.Conn.SetWriteDeadline(time.Time{})
		c.writeMu.Unlock()
		streamBufs.Put(bp)
		if err != nil {
			_ = c.Close() // pion's read loop then ends the allocation
		}
	}
}

// closeOutbox drops what waits; the writer, if any, ends.
func (c *streamConn) closeOutbox() {
	c.out.mu.Lock()
	c.out.closed = true
	c.out.mu.Unlock()
}
