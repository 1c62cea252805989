//go:build !linux

package rawudp

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Where epoll, recvmmsg and sendmmsg are missing, the same API runs on Go's own sockets:
// a goroutine per socket, one datagram per system call. Only what relay uses exists.

// ErrNotIPv4 and ErrNotIPv6 are WriteTo's answers for a destination of the other
// address family.
var (
	ErrNotIPv4 = errors.New("rawudp: not an IPv4 destination")
	ErrNotIPv6 = errors.New("rawudp: not an IPv6 destination")
)

// Family is the address family of a socket.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// FamilyOf is unknown here (0): nothing uses it without sendmmsg.
func FamilyOf(*net.UDPConn) Family { return 0 }

// TuneBuffers asks for larger kernel buffers, as far as the system allows.
func TuneBuffers(u *net.UDPConn, size int) {
	_ = u.SetReadBuffer(size)
	_ = u.SetWriteBuffer(size)
}

// Conn is an IPv4 UDP socket read by a goroutine of its Pollers.
type Conn struct{ u *net.UDPConn }

// LocalAddr is the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.u.LocalAddr().(*net.UDPAddr).AddrPort() }

// WriteTo sends one datagram to to.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if c.LocalAddr().Addr().Is6() {
		if !to.Addr().Is6() || to.Addr().Is4In6() {
			return 0, ErrNotIPv6
		}
	} else if !to.Addr().Is4() {
		return 0, ErrNotIPv4
	}
	return c.u.WriteToUDPAddrPort(b, to)
}

// Close closes the socket, which ends its reader.
func (c *Conn) Close() error { return c.u.Close() }

// PollerConfig shapes each socket's read buffer (Slots and PerRead are unused here).
type PollerConfig struct {
	Slots, PerRead, Size, Headroom, Tailroom int
}

// Sink receives what a socket's reader reads (see the Linux documentation).
type Sink[T any] interface {
	Datagram(owner T, buf []byte, n int, from netip.AddrPort, truncated bool)
	Flush()
}

// Pollers reads each socket opened through it with a goroutine of its own.
type Pollers[T any] struct {
	cfg     PollerConfig
	newSink func() Sink[T]
	wg      sync.WaitGroup
}

// NewPollers makes a set of readers whose Sinks newSink makes, one per socket.
func NewPollers[T any](cfg PollerConfig, newSink func() Sink[T]) *Pollers[T] {
	return &Pollers[T]{cfg: cfg, newSink: newSink}
}

// Open binds a UDP socket on addr (IPv4, or IPv6 only) and reads it until it closes.
func (ps *Pollers[T]) Open(addr netip.AddrPort, owner T) (*Conn, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	u, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	sink := ps.newSink()
	cfg := ps.cfg
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		buf := make([]byte, cfg.Size)
		room := cfg.Size - cfg.Headroom - cfg.Tailroom
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf[cfg.Headroom : cfg.Size-cfg.Tailroom])
			if err != nil {
				return
			}
			// A datagram that fills the buffer was probably cut.
			sink.Datagram(owner, buf, n, from, n == room)
			sink.Flush()
		}
	}()
	return &Conn{u: u}, nil
}

// Stop waits for the readers, which end as their sockets close.
func (ps *Pollers[T]) Stop() { ps.wg.Wait() }

// Reader reads one datagram at a time.
type Reader struct {
	c   *net.UDPConn
	buf []byte
}

// NewReader reads c into a buffer of size bytes (n is unused here).
func NewReader(c *net.UDPConn, _, size int) (*Reader, error) {
	return &Reader{c: c, buf: make([]byte, size)}, nil
}

// Buffered is always false: every read takes one datagram.
func (r *Reader) Buffered() bool { return false }

// Next returns the next datagram, valid until the following call, and its source.
func (r *Reader) Next() ([]byte, netip.AddrPort, error) {
	n, from, err := r.c.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return nil, from, err
	}
	return r.buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}
