//go:build linux

package rawudp

import (
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reader reads a UDP socket that stays in Go's runtime poller with recvmmsg(2): under
// load one system call and one wake-up bring in a whole batch. One goroutine uses it.
type Reader struct {
	rc    syscall.RawConn
	b     *Batch
	n, i  int
	errno syscall.Errno
	read  func(fd uintptr) bool // made once: a read allocates no closure
}

// NewReader reads c up to n datagrams at a time, into buffers of size bytes (a longer
// datagram is cut to size).
func NewReader(c *net.UDPConn, n, size int) (*Reader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &Reader{rc: rc, b: NewBatch(n, size)}
	r.read = r.readFD
	return r, nil
}

func (r *Reader) readFD(fd uintptr) bool {
	n, errno := r.b.recvmmsg(fd)
	if errno == unix.EAGAIN {
		return false // nothing yet: the runtime poller waits and calls again
	}
	r.n, r.errno = n, errno
	return true
}

// Buffered reports whether Next has datagrams left from the last system call, that is,
// whether Next will return without reading the socket.
func (r *Reader) Buffered() bool { return r.i < r.n }

// Next returns the next datagram, valid until the following call, and its source
// (IPv4-mapped addresses unmapped). It waits, in the runtime poller, until one comes. An
// error is the socket's (closed) or one datagram's (an ICMP error surfacing; the next
// call reads on).
func (r *Reader) Next() ([]byte, netip.AddrPort, error) {
	for r.i >= r.n {
		r.i, r.n = 0, 0
		if err := r.rc.Read(r.read); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if r.errno != 0 {
			err := r.errno
			r.errno = 0
			return nil, netip.AddrPort{}, err
		}
	}
	i := r.i
	r.i++
	return r.b.Data(i), r.b.From(i), nil
}
