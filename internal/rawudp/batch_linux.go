//go:build linux

package rawudp

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batch is n datagram slots for one recvmmsg(2) or sendmmsg(2): each slot's buffer,
// length and address wired into the kernel's message headers once, so that moving a
// batch allocates nothing. A Batch is used by one goroutine at a time.
//
// A slot's buffer is its own (NewBatch with a size) or one the caller points it at
// (SetBuf), for example a larger buffer with room for a header in front. A slot with no
// address set (or an address cleared by SetAddr with an invalid AddrPort) is sent to a
// connected socket's peer; after Recv, each slot's address is the datagram's source, so
// sending the batch back answers every sender.
type Batch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte

	// SendVia's arguments and results: RawConn.Write takes a func, and this one is made
	// once, in NewBatch, so that a send allocates no closure.
	vfrom, vto, vsent int
	verr              syscall.Errno
	write             func(fd uintptr) bool
}

// NewBatch makes n slots; with size > 0 each gets a buffer of its own of size bytes
// (one allocation for all), else SetBuf must give each slot its buffer before use.
func NewBatch(n, size int) *Batch {
	b := &Batch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		bufs:  make([][]byte, n),
	}
	var slab []byte
	if size > 0 {
		slab = make([]byte, n*size)
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		if size > 0 {
			b.SetBuf(i, slab[i*size:(i+1)*size:(i+1)*size])
		}
	}
	b.write = b.writeFD
	return b
}

// Slots is the number of slots.
func (b *Batch) Slots() int { return len(b.hdrs) }

// Buf is slot i's buffer, whole.
func (b *Batch) Buf(i int) []byte { return b.bufs[i] }

// SetBuf makes p slot i's buffer (len(p) > 0): Recv reads into all of it, Send sends all
// of it unless SetLen says less. The batch keeps p until SetBuf replaces it.
func (b *Batch) SetBuf(i int, p []byte) {
	b.bufs[i] = p
	b.iovs[i].Base = &p[0]
	b.iovs[i].SetLen(len(p))
}

// SetLen sets how many bytes of slot i's buffer Send sends.
func (b *Batch) SetLen(i, n int) { b.iovs[i].SetLen(n) }

// SetAddr sets slot i's destination, written for a socket of family f; an invalid to
// clears it (a connected socket's peer).
func (b *Batch) SetAddr(i int, to netip.AddrPort, f Family) {
	if !to.IsValid() {
		b.hdrs[i].Hdr.Namelen = 0
		return
	}
	b.hdrs[i].Hdr.Namelen = putSockaddr(&b.names[i], to, f)
}

// Len is the size of the datagram Recv put in slot i (at most the buffer's).
func (b *Batch) Len(i int) int { return int(b.hdrs[i].Len) }

// Data is the datagram Recv put in slot i.
func (b *Batch) Data(i int) []byte { return b.bufs[i][:b.hdrs[i].Len] }

// From is the source of the datagram Recv put in slot i.
func (b *Batch) From(i int) netip.AddrPort { return addrPortOf(&b.names[i]) }

// Truncated reports whether the datagram in slot i was longer than the buffer, and cut.
func (b *Batch) Truncated(i int) bool { return b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 }

// recvmmsg reads into every slot without waiting. It returns the count, 0 with EAGAIN
// when nothing waits, or another errno (an ICMP error of an earlier send surfacing).
func (b *Batch) recvmmsg(fd uintptr) (int, syscall.Errno) {
	for i := range b.hdrs {
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
		uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// sendmmsg sends slots [from, to) without waiting (EINTR is retried). It returns how
// many left; when the first of them cannot go, 0 and why.
func (b *Batch) sendmmsg(fd uintptr, from, to int) (int, syscall.Errno) {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[from])),
			uintptr(to-from), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(r), 0
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// SendVia sends slots [from, to) with one sendmmsg(2) through rc, the RawConn of a
// socket in Go's runtime poller. It never waits for room: a full socket buffer is
// syscall.EAGAIN, as for a non-blocking socket. It returns how many slots left; when the
// first cannot go, 0 and its errno (the caller may skip it and send the rest); an error
// that is no syscall.Errno means the socket is closed.
func (b *Batch) SendVia(rc syscall.RawConn, from, to int) (int, error) {
	if from >= to {
		return 0, nil
	}
	b.vfrom, b.vto, b.vsent, b.verr = from, to, 0, 0
	if err := rc.Write(b.write); err != nil {
		return 0, err
	}
	if b.verr != 0 {
		return 0, b.verr
	}
	return b.vsent, nil
}

func (b *Batch) writeFD(fd uintptr) bool {
	// Done whatever happened: waiting for room would stall the caller (a poller serving
	// many sockets) behind one socket.
	b.vsent, b.verr = b.sendmmsg(fd, b.vfrom, b.vto)
	return true
}
