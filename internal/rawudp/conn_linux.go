//go:build linux

package rawudp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotIPv4 and ErrNotIPv6 are WriteTo's answers for a destination of the other
// address family: an IPv6 Conn is IPv6-only (IPV6_V6ONLY), so that an allocation's relay
// socket reaches peers of its own family only (RFC 8656 §7.2).
var (
	ErrNotIPv4 = errors.New("rawudp: not an IPv4 destination")
	ErrNotIPv6 = errors.New("rawudp: not an IPv6 destination")
)

// Conn is a non-blocking UDP socket, IPv4 or IPv6-only, outside Go's runtime poller: nothing waits in
// it. Its owner learns that it is readable from a poller (Pollers, Epoll) and reads
// with Recv, or polls with ReadTimeout.
//
// Calls may come from several goroutines. They hold the socket shared and Close holds it
// exclusively, so no call ever reaches a descriptor number that the kernel has since
// given to another file.
type Conn struct {
	fd     int
	local  netip.AddrPort
	family Family
	mu     sync.RWMutex
	closed bool
	reg    registry // the poller reading it, if any
}

// registry is a poller a Conn must leave before its descriptor closes.
type registry interface{ remove(fd int) }

// Options say how Open makes a socket.
type Options struct {
	// Local is the address to bind, IPv4 or IPv6 (an IPv4-mapped one counts as IPv4);
	// port 0 picks a free one.
	Local netip.AddrPort
	// Remote, when valid, is connected to: Write sends there, and only its datagrams are
	// received.
	Remote netip.AddrPort
	// Buffer, when > 0, is the kernel buffer to ask for each way (see TuneBuffers).
	Buffer int
}

// Open makes a non-blocking UDP socket as o says: IPv4 for an IPv4 Local, IPv6-only
// for an IPv6 one. The socket never broadcasts (no SO_BROADCAST): a datagram to a
// broadcast address fails with EACCES.
func Open(o Options) (*Conn, error) {
	local := netip.AddrPortFrom(o.Local.Addr().Unmap(), o.Local.Port())
	remote := netip.AddrPortFrom(o.Remote.Addr().Unmap(), o.Remote.Port())
	family, domain, network := IPv4, unix.AF_INET, "udp4"
	if local.Addr().Is6() {
		family, domain, network = IPv6, unix.AF_INET6, "udp6"
	}
	if !local.Addr().IsValid() || (remote.IsValid() && remote.Addr().Is6() != local.Addr().Is6()) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: family.mismatch()}
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErrorOn("socket", network, err)
	}
	fail := func(op string, err error) (*Conn, error) {
		_ = unix.Close(fd)
		return nil, opErrorOn(op, network, err)
	}
	if family == IPv6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if o.Buffer > 0 {
		tuneFD(fd, o.Buffer)
	}
	if err := unix.Bind(fd, sockaddrOf(local)); err != nil {
		return fail("bind", err)
	}
	if remote.IsValid() {
		if err := unix.Connect(fd, sockaddrOf(remote)); err != nil {
			return fail("connect", err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var bound netip.AddrPort
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		bound = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		bound = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	default:
		return fail("getsockname", fmt.Errorf("not an IP socket: %T", sa))
	}
	return &Conn{fd: fd, local: bound, family: family}, nil
}

// mismatch is the error for a destination a socket of family f cannot reach.
func (f Family) mismatch() error {
	if f == IPv6 {
		return ErrNotIPv6
	}
	return ErrNotIPv4
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func opError(op string, err error) error { return opErrorOn(op, "udp4", err) }

func opErrorOn(op, network string, err error) error {
	return &net.OpError{Op: op, Net: network, Err: os.NewSyscallError(op, err)}
}

// LocalAddr is the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// WriteTo sends one datagram to to without waiting. A refusal is the kernel's
// syscall.Errno (EAGAIN: the send buffer is full; EACCES: a broadcast address; ...),
// returned as it is so that a failed send allocates nothing either; net.ErrClosed once
// the Conn is closed.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if c.family == IPv6 {
		if !to.Addr().Is6() || to.Addr().Is4In6() {
			return 0, ErrNotIPv6
		}
		var sa unix.RawSockaddrInet6
		n := putSockaddr(&sa, to, IPv6)
		return c.sendto(b, unsafe.Pointer(&sa), uintptr(n))
	}
	if !to.Addr().Is4() {
		return 0, ErrNotIPv4
	}
	var sa unix.RawSockaddrInet4
	putSockaddr4(&sa, to)
	return c.sendto(b, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4)
}

// Family is the socket's address family.
func (c *Conn) Family() Family { return c.family }

// Write sends one datagram to the connected peer without waiting; errors as WriteTo.
func (c *Conn) Write(b []byte) (int, error) { return c.sendto(b, nil, 0) }

// sendto is sendto(2) of b to the address at sa (nil: the connected peer), under the
// socket's shared lock.
func (c *Conn) sendto(b []byte, sa unsafe.Pointer, saLen uintptr) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT,
		uintptr(sa), saLen)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// ReadTimeout reads one datagram into b, waiting at most d for it; after d,
// os.ErrDeadlineExceeded. An error an earlier send left queued on a connected socket
// (ECONNREFUSED, from an ICMP port unreachable) is no datagram, and is passed over.
func (c *Conn) ReadTimeout(b []byte, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			return 0, net.ErrClosed
		}
		n, err := unix.Read(c.fd, b)
		fd := c.fd
		c.mu.RUnlock()
		if err == nil {
			return n, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR && err != unix.ECONNREFUSED {
			return 0, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		// poll(2) on a number Close may reuse meanwhile at worst wakes early: the next
		// read happens under the lock again.
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left/time.Millisecond)+1)
	}
}

// Recv reads up to b.Slots() datagrams without waiting. It returns how many; 0 and no
// error when none is waiting. An error is the kernel's syscall.Errno (an ICMP error of
// an earlier send surfacing: datagrams may still wait behind it), or net.ErrClosed.
func (c *Conn) Recv(b *Batch) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	n, errno := b.recvmmsg(uintptr(c.fd))
	switch errno {
	case 0:
		return n, nil
	case unix.EAGAIN:
		return 0, nil
	}
	return 0, errno
}

// Send sends slots [from, to) of b without waiting, each to its slot's address (or the
// connected peer). It returns how many left; when the first cannot go, 0 and the
// kernel's syscall.Errno (EAGAIN: the send buffer is full).
func (c *Conn) Send(b *Batch, from, to int) (int, error) {
	if from >= to {
		return 0, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	n, errno := b.sendmmsg(uintptr(c.fd), from, to)
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// Close leaves the poller reading the socket, if any (one already reading it finishes
// first), and closes it. A second Close returns net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	if c.reg != nil {
		c.reg.remove(c.fd)
	}
	return unix.Close(c.fd)
}
