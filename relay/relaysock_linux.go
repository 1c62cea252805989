//go:build linux

package relay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relaySock is a relay socket outside Go's netpoller: a nonblocking descriptor that one
// of the server's pollers watches with epoll. A few poller goroutines read every relay
// socket with recvmmsg(2), so a datagram from a peer wakes no per-allocation goroutine,
// and an idle allocation holds no goroutine stack of ours and no runtime poll state.
type relaySock struct {
	fd     int
	mu     sync.RWMutex // I/O holds it shared, close exclusively: no call ever meets a reused fd number
	closed bool
	p      *poller
}

// open binds an IPv4 UDP socket on addr and hands it to a poller.
func (s *relaySock) open(ps *pollers, c *relayConn, addr netip.AddrPort) error {
	if !addr.Addr().Is4() {
		return errors.New("relay: relay sockets are IPv4")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return wrapSyscall("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}); err != nil {
		_ = unix.Close(fd)
		return wrapSyscall("bind", err)
	}
	p, err := ps.pick(int(addr.Port()))
	if err != nil {
		_ = unix.Close(fd)
		return err
	}
	s.fd, s.p = fd, p
	if err := p.add(c); err != nil {
		_ = unix.Close(fd)
		return err
	}
	return nil
}

// sendTo sends one datagram without blocking and without allocating.
func (s *relaySock) sendTo(b []byte, to netip.AddrPort) (int, error) {
	if !to.Addr().Is4() {
		return 0, &net.OpError{Op: "write", Net: "udp4", Err: net.InvalidAddrError("relay: IPv6 peer on an IPv4 relay")}
	}
	var sa unix.RawSockaddrInet4
	putSockaddr4(&sa, to)
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.p == nil {
		return 0, net.ErrClosed // closed, or not open yet
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	if errno != 0 {
		return 0, &net.OpError{Op: "write", Net: "udp4", Err: errno}
	}
	return int(n), nil
}

// close takes the socket off its poller and closes it; a poller that already picked it
// for reading finishes first.
func (s *relaySock) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	if s.p == nil {
		return nil // never opened: there is no descriptor to close
	}
	s.p.remove(s.fd)
	return unix.Close(s.fd)
}

func putSockaddr4(sa *unix.RawSockaddrInet4, to netip.AddrPort) {
	sa.Family = unix.AF_INET
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	sa.Addr = to.Addr().As4()
}

func wrapSyscall(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp4", Err: err}
}

// pollers is the server's set of relay-socket pollers, one per CPU, started with the
// first relay socket and stopped by stop.
type pollers struct {
	mu      sync.Mutex
	all     []*poller
	wg      sync.WaitGroup
	stopped bool
}

func newPollers() *pollers { return &pollers{} }

func (ps *pollers) pick(port int) (*poller, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.stopped {
		return nil, net.ErrClosed
	}
	if ps.all == nil {
		for i := 0; i < runtime.GOMAXPROCS(0); i++ {
			p, err := newPoller()
			if err != nil {
				for _, q := range ps.all {
					q.close()
				}
				ps.all = nil
				return nil, err
			}
			ps.all = append(ps.all, p)
		}
		for _, p := range ps.all {
			ps.wg.Add(1)
			go p.run(&ps.wg)
		}
	}
	return ps.all[port%len(ps.all)], nil
}

// stop ends the pollers (sockets still open are left to their owners to close).
func (ps *pollers) stop() {
	ps.mu.Lock()
	ps.stopped = true
	all := ps.all
	ps.mu.Unlock()
	for _, p := range all {
		p.close()
	}
	ps.wg.Wait()
}

// pollBatch is how many datagrams a poller takes from one socket per event, pollBufs
// how many it holds before it must send what it has, pollEvents how many ready sockets
// one epoll_wait(2) returns.
const (
	pollBatch  = 8
	pollBufs   = 64
	pollEvents = 128
)

// poller reads the relay sockets assigned to it. Its epoll descriptor is itself watched
// by Go's runtime poller, so the goroutine sleeps like any network reader rather than
// in a blocking system call. Data from a peer with a channel is framed in place (the
// buffers have room for the ChannelData header in front and stream padding behind) and
// sent to clients in batches, one sendmmsg(2) per listener socket per wake-up.
type poller struct {
	epfd   int
	f      *os.File // epfd, registered with the runtime poller
	rc     syscall.RawConn
	wait   func(fd uintptr) bool
	mu     sync.Mutex
	conns  map[int32]*relayConn
	closed bool

	events [pollEvents]unix.EpollEvent
	bufs   [pollBufs][relayBufSize]byte
	names  [pollBatch]unix.RawSockaddrInet6
	iovs   [pollBatch]unix.Iovec
	hdrs   [pollBatch]unix.Mmsghdr
	used   int // buffers holding datagrams not yet sent
	out    sendBatch
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, wrapSyscall("epoll_create", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, wrapSyscall("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &poller{epfd: epfd, f: f, rc: rc, conns: make(map[int32]*relayConn)}
	p.wait = p.poll
	for i := range p.hdrs {
		p.hdrs[i].Hdr.Iov = &p.iovs[i]
		p.hdrs[i].Hdr.SetIovlen(1)
		p.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&p.names[i]))
	}
	return p, nil
}

func (p *poller) add(c *relayConn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.sock.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.sock.fd, &ev); err != nil {
		return wrapSyscall("epoll_ctl", err)
	}
	p.conns[int32(c.sock.fd)] = c
	return nil
}

func (p *poller) remove(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	delete(p.conns, int32(fd))
}

func (p *poller) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.f.Close() // wakes run, which then ends
}

func (p *poller) run(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		if err := p.rc.Read(p.wait); err != nil {
			return // closed
		}
	}
}

// poll handles every ready socket, again and again until none is ready; then it asks
// the runtime poller to wait.
func (p *poller) poll(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), p.events[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return true // the descriptor is going away; Read reports it
		}
		if n <= 0 {
			return false
		}
		more := n == len(p.events)
		for i := 0; i < n; i++ {
			p.mu.Lock()
			c := p.conns[p.events[i].Fd]
			p.mu.Unlock()
			if c != nil && p.read(c) {
				more = true
			}
		}
		p.flush()
		if !more {
			// Every ready socket was emptied: whatever arrives from now on is a new event
			// for the runtime poller, so it can wait without asking epoll once more.
			return false
		}
	}
}

// read takes up to pollBatch datagrams from c's socket and hands each on. It reports
// whether the socket may hold more.
func (p *poller) read(c *relayConn) bool {
	if p.used+pollBatch > pollBufs {
		p.flush()
	}
	for i := range p.hdrs {
		b := &p.bufs[p.used+i]
		p.iovs[i].Base = &b[channelDataHdrSize]
		p.iovs[i].SetLen(relayBufSize - channelDataHdrSize - 3)
		p.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		p.hdrs[i].Hdr.Flags = 0
		p.hdrs[i].Len = 0
	}
	c.sock.mu.RLock()
	if c.sock.closed {
		c.sock.mu.RUnlock()
		return false
	}
	r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.sock.fd), uintptr(unsafe.Pointer(&p.hdrs[0])),
		pollBatch, unix.MSG_DONTWAIT, 0, 0)
	c.sock.mu.RUnlock()
	if errno == unix.EAGAIN {
		return false
	}
	if errno != 0 {
		return true // an ICMP error surfacing: datagrams may wait behind it
	}
	first := p.used
	p.used += int(r)
	for i := 0; i < int(r); i++ {
		buf := p.bufs[first+i][:]
		if p.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			c.r.s.dropped[dropMalformedIdx].Inc() // longer than any media datagram: dropped, not cut
			continue
		}
		c.received(buf, int(p.hdrs[i].Len), sockaddrToAddrPort(&p.names[i]), &p.out)
	}
	return r == pollBatch
}

// flush sends what is batched and frees the buffers.
func (p *poller) flush() {
	p.out.flush()
	p.used = 0
}
