//go:build linux

package relay

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many datagrams one recvmmsg(2) may return.
const batchSize = 32

// batchReader reads a UDP socket with recvmmsg(2): under load one system call and one
// wake-up bring in up to batchSize datagrams. Buffers, headers and the read callback
// are made once, so a read allocates nothing. One goroutine uses it.
type batchReader struct {
	rc    syscall.RawConn
	bufs  [batchSize][]byte
	names [batchSize]unix.RawSockaddrInet6
	iovs  [batchSize]unix.Iovec
	hdrs  [batchSize]unix.Mmsghdr
	n, i  int
	errno syscall.Errno
	read  func(fd uintptr) bool
}

func newBatchReader(c *net.UDPConn, bufSize int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchReader{rc: rc}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, bufSize)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(bufSize)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	b.read = func(fd uintptr) bool {
		for i := range b.hdrs {
			b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			b.hdrs[i].Len = 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EWOULDBLOCK {
			return false // nothing yet: the runtime poller waits and calls again
		}
		b.errno = errno
		if errno == 0 {
			b.n = int(n)
		}
		return true
	}
	return b, nil
}

// next returns the next datagram (valid until the following call) and its source.
func (b *batchReader) next() ([]byte, netip.AddrPort, error) {
	for b.i >= b.n {
		b.i, b.n = 0, 0
		if err := b.rc.Read(b.read); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if b.errno != 0 {
			err := b.errno
			b.errno = 0
			return nil, netip.AddrPort{}, err
		}
	}
	i := b.i
	b.i++
	return b.bufs[i][:b.hdrs[i].Len], sockaddrToAddrPort(&b.names[i]), nil
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// tuneBuffers raises a socket's kernel buffers: past net.core.rmem_max/wmem_max when
// relay may (CAP_NET_ADMIN), else as far as those limits allow.
func tuneBuffers(u *net.UDPConn, size int) {
	rc, err := u.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	})
}
