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

// ErrNotIPv4 is WriteTo's answer for a destination a Conn cannot reach: Conns are IPv4.
var ErrNotIPv4 = errors.New("rawudp: not an IPv4 destination")

// Conn is a non-blocking IPv4 UDP socket outside Go's runtime poller: nothing waits in
// it. Its owner learns that it is readable from a poller (Pollers, Epoll) and reads
// with Recv, or polls with ReadTimeout.
//
// Calls may come from several goroutines. They hold the socket shared and Close holds it
// exclusively, so no call ever reaches a descriptor number that the kernel has since
// given to another file.
type Conn struct {
	fd     int
	local  netip.AddrPort
	mu     sync.RWMutex
	closed bool
	reg    registry // the poller reading it, if any
}

// registry is a poller a Conn must leave before its descriptor closes.
type registry interface{ remove(fd int) }

// Options say how Open makes a socket.
type Options struct {
	// Local is the IPv4 address to bind; port 0 picks a free one.
	Local netip.AddrPort
	// Remote, when valid, is connected to: Write sends there, and only its datagrams are
	// received.
	Remote netip.AddrPort
	// Buffer, when > 0, is the kernel buffer to ask for each way (see TuneBuffers).
	Buffer int
}

// Open makes a non-blocking IPv4 UDP socket as o says. The socket never broadcasts
// (no SO_BROADCAST): a datagram to a broadcast address fails with EACCES.
func Open(o Options) (*Conn, error) {
	if !o.Local.Addr().Is4() || (o.Remote.IsValid() && !o.Remote.Addr().Is4()) {
		return nil, &net.OpError{Op: "listen", Net: "udp4", Err: ErrNotIPv4}
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opError("socket", err)
	}
	fail := func(op string, err error) (*Conn, error) {
		_ = unix.Close(fd)
		return nil, opError(op, err)
	}
	if o.Buffer > 0 {
		tuneFD(fd, o.Buffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: o.Local.Addr().As4(), Port: int(o.Local.Port())}); err != nil {
		return fail("bind", err)
	}
	if o.Remote.IsValid() {
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: o.Remote.Addr().As4(), Port: int(o.Remote.Port())}); err != nil {
			return fail("connect", err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return fail("getsockname", fmt.Errorf("not IPv4: %T", sa))
	}
	return &Conn{fd: fd, local: netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))}, nil
}

func opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp4", Err: os.NewSyscallError(op, err)}
}

// LocalAddr is the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// WriteTo sends one datagram to to without waiting. A refusal is the kernel's
// syscall.Errno (EAGAIN: the send buffer is full; EACCES: a broadcast address; ...),
// returned as it is so that a failed send allocates nothing either; net.ErrClosed once
// the Conn is closed.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if !to.Addr().Is4() {
		return 0, ErrNotIPv4
	}
	var sa unix.RawSockaddrInet4
	putSockaddr4(&sa, to)
	return c.sendto(b, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4)
}

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
