//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The traffic generator owns its sockets as raw non-blocking descriptors and moves
// datagrams with recvmmsg/sendmmsg over buffers allocated once: no per-packet
// allocation, no goroutine wake-up per packet, and one system call per batch.

var loopback = netip.MustParseAddr("127.0.0.1")

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
}

// openUDP binds a non-blocking UDP socket on 127.0.0.1 (any port), connects it to
// peer unless peer is the zero value, and asks for bufBytes of receive buffer.
func openUDP(peer netip.AddrPort, bufBytes int) (fd int, local netip.AddrPort, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, local, err
	}
	fail := func(e error) (int, netip.AddrPort, error) {
		unix.Close(fd)
		return -1, netip.AddrPort{}, e
	}
	if bufBytes > 0 {
		// FORCE passes net.core.rmem_max when we are root; otherwise the plain option.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bufBytes)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bufBytes)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback.As4()}); err != nil {
		return fail(err)
	}
	if peer.IsValid() {
		if err := unix.Connect(fd, sockaddr(peer)); err != nil {
			return fail(err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return fail(fmt.Errorf("getsockname: %T", sa))
	}
	return fd, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), nil
}

// mmsgBatch is n datagram slots of size bytes each, with their headers, iovecs and
// source-address slots wired together once.
type mmsgBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	bufs  [][]byte
	size  int
}

func newBatch(n, size int, withNames bool) *mmsgBatch {
	b := &mmsgBatch{
		hdrs: make([]unix.Mmsghdr, n),
		iovs: make([]unix.Iovec, n),
		bufs: make([][]byte, n),
		size: size,
	}
	slab := make([]byte, n*size)
	if withNames {
		b.names = make([]unix.RawSockaddrInet4, n)
	}
	for i := 0; i < n; i++ {
		b.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		if withNames {
			b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
	}
	return b
}

// recv reads up to len(b.hdrs) datagrams without waiting; 0 and EAGAIN when none.
func (b *mmsgBatch) recv(fd int) (int, unix.Errno) {
	for i := range b.hdrs {
		b.iovs[i].SetLen(b.size)
		if b.names != nil {
			b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
	}
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
		uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// send writes slots [from, to), each with the length already set in its iovec (setLen),
// to its own address slot (when the batch has names) or the connected peer.
func (b *mmsgBatch) send(fd, from, to int) (int, unix.Errno) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[from])),
		uintptr(to-from), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func (b *mmsgBatch) setLen(i, n int) { b.iovs[i].SetLen(n) }

// writeRaw is write(2) on a connected socket without the runtime's syscall bookkeeping:
// the socket is non-blocking, so the call never parks.
func writeRaw(fd int, p []byte) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return e
}

// epollWait waits at most d (nanosecond resolution with epoll_pwait2, Linux 5.11+;
// rounded up to milliseconds with epoll_wait before that), so pacing is not stuck to
// 1 ms bursts.
func epollWait(epfd int, events []unix.EpollEvent, d time.Duration) (int, error) {
	if !noPwait2 {
		ts := unix.NsecToTimespec(int64(d))
		r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
			uintptr(len(events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if e == 0 {
			return int(r), nil
		}
		if e != unix.ENOSYS {
			return 0, e
		}
		noPwait2 = true
	}
	return unix.EpollWait(epfd, events, int((d+time.Millisecond-1)/time.Millisecond))
}

var noPwait2 bool

// setTimerSlack sets this thread's timer slack (default 50 µs), which would otherwise
// stretch every short sleep of the pacing loop.
func setTimerSlack(d time.Duration) {
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d), 0, 0, 0)
}
