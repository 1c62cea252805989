//go:build linux

package relay

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

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
// buffered reports whether next has datagrams left from the last read.
func (b *batchReader) buffered() bool { return b.i < b.n }

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

// sendBatch gathers ChannelData for UDP clients during one poller wake-up and sends it
// with one sendmmsg(2) per listener socket. A poller owns one; nothing here allocates.
type sendBatch struct {
	n     int
	items [pollBufs]sendItem
	hdrs  [pollBufs]unix.Mmsghdr
	iovs  [pollBufs]unix.Iovec
	names [pollBufs]unix.RawSockaddrInet6

	// The arguments of write, which runs inside RawConn.Write: a method value made once,
	// so that a send allocates no closure.
	wfrom, wto int
	wsent      int
	werr       syscall.Errno
	write      func(fd uintptr) bool
}

type sendItem struct {
	pc      *packetConn
	b       []byte
	to      netip.AddrPort
	payload int
}

// add queues b (a ChannelData message of payload bytes of data, or a response:
// notRelayed) for to through pc. b must stay untouched until flush.
func (q *sendBatch) add(pc *packetConn, b []byte, to netip.AddrPort, payload int) {
	if q.n == len(q.items) {
		q.flush()
	}
	q.items[q.n] = sendItem{pc: pc, b: b, to: to, payload: payload}
	q.n++
}

// flush sends everything queued, grouped by listener socket.
func (q *sendBatch) flush() {
	if q.write == nil {
		q.write = q.writeFD
	}
	for start := 0; start < q.n; start++ {
		pc := q.items[start].pc
		if pc == nil {
			continue // sent with an earlier group
		}
		// Gather this socket's messages, in order, at the front of hdrs.
		k := 0
		for i := start; i < q.n; i++ {
			it := &q.items[i]
			if it.pc != pc {
				continue
			}
			putSockaddr(&q.names[k], it.to, pc.family)
			q.iovs[k].Base = &it.b[0]
			q.iovs[k].SetLen(len(it.b))
			h := &q.hdrs[k].Hdr
			h.Name = (*byte)(unsafe.Pointer(&q.names[k]))
			h.Namelen = sockaddrLen(pc.family)
			h.Iov = &q.iovs[k]
			h.SetIovlen(1)
			q.hdrs[k].Len = 0
			// Move the item to the group's end, shifting the others up: a stable partition,
			// so every client's datagrams keep their order (and the group's payload sizes
			// end up at start..start+k).
			moved := *it
			copy(q.items[start+k+1:i+1], q.items[start+k:i])
			q.items[start+k] = moved
			k++
		}
		q.send(pc, start, k)
		for i := start; i < start+k; i++ {
			q.items[i].pc = nil
		}
		start += k - 1
	}
	for i := range q.items[:q.n] {
		q.items[i] = sendItem{}
	}
	q.n = 0
}

// send sends hdrs[0:k], whose payload sizes are items[start:start+k], through pc.
func (q *sendBatch) send(pc *packetConn, start, k int) {
	var bytes, packets int
	for q.wfrom, q.wto = 0, k; q.wfrom < q.wto; {
		q.wsent, q.werr = 0, 0
		if err := pc.rc.Write(q.write); err != nil {
			return // the listener closed
		}
		if q.wsent == 0 && q.werr == 0 {
			return
		}
		for i := q.wfrom; i < q.wfrom+q.wsent; i++ {
			if n := q.items[start+i].payload; n != notRelayed {
				bytes += n
				packets++
			}
		}
		q.wfrom += q.wsent
		switch q.werr {
		case 0:
		case unix.EAGAIN: // (EWOULDBLOCK is the same number on Linux)
			pc.s.dropped[dropBacklogIdx].Inc()
			q.wfrom++
		default:
			// This destination refused (unreachable, no route); the rest still go.
			pc.s.metrics.ListenerErrors.WithLabelValues(pc.gate.transport).Inc()
			q.wfrom++
		}
	}
	if packets > 0 {
		pc.s.metrics.BytesPeerToClient.Add(float64(bytes))
		pc.s.metrics.PacketsPeerToClient.Add(float64(packets))
	}
}

func (q *sendBatch) writeFD(fd uintptr) bool {
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[q.wfrom])),
		uintptr(q.wto-q.wfrom), unix.MSG_DONTWAIT, 0, 0)
	for errno == unix.EINTR {
		r, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[q.wfrom])),
			uintptr(q.wto-q.wfrom), unix.MSG_DONTWAIT, 0, 0)
	}
	switch {
	case errno == unix.EAGAIN || errno == unix.EWOULDBLOCK:
		// The socket buffer is full. Waiting for room would stop this poller, and every
		// relay socket on it, behind one listener: drop the datagram, as the kernel
		// would, and count it.
		q.werr = errno
	case errno != 0:
		q.werr = errno
	default:
		q.wsent = int(r)
	}
	return true
}

// putSockaddr writes to as a socket address of the listener's family (an IPv4 client of
// a dual-stack socket as ::ffff:a.b.c.d).
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, family int) {
	if family == unix.AF_INET {
		putSockaddr4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)), to)
		return
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: to.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
}

func sockaddrLen(family int) uint32 {
	if family == unix.AF_INET {
		return unix.SizeofSockaddrInet4
	}
	return unix.SizeofSockaddrInet6
}

// socketFamily is a UDP socket's address family (AF_INET or AF_INET6).
func socketFamily(u *net.UDPConn) int {
	family := unix.AF_INET6
	if rc, err := u.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
				family = d
			}
		})
	}
	return family
}
