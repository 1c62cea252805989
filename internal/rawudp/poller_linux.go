//go:build linux

package rawudp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// PollerConfig shapes the buffers of each poller of a Pollers.
type PollerConfig struct {
	Slots   int // datagrams a poller holds before it must Flush its Sink
	PerRead int // datagrams taken from one socket per recvmmsg(2), at most Slots
	Size    int // bytes of each slot
	// Headroom bytes in front of each datagram, and Tailroom behind it, stay free: the
	// Sink may write a header there and send the datagram on in place. A datagram longer
	// than Size-Headroom-Tailroom is cut, and reported truncated.
	Headroom, Tailroom int
}

// Sink receives what one poller reads; each poller has its own, called from that
// poller's goroutine only.
type Sink[T any] interface {
	// Datagram hands over a datagram read from the socket opened for owner: its n bytes
	// are buf[Headroom:Headroom+n] of the whole slot buf, which stays the poller's and
	// untouched until the next Flush. truncated: it was longer than the slot, and cut.
	Datagram(owner T, buf []byte, n int, from netip.AddrPort, truncated bool)
	// Flush says the slots are about to be reused, or the poller is going to sleep:
	// whatever still points into them must be sent or copied now.
	Flush()
}

// Pollers reads many Conns with a few goroutines: one epoll poller per Go processor
// (GOMAXPROCS), started with the first Open. Each wakes when any of its sockets is
// readable, takes a batch from every ready socket with recvmmsg(2), hands each datagram
// to its Sink, and sleeps again in the runtime poller (not in a blocking system call).
// No goroutine exists per socket, and a datagram wakes none.
type Pollers[T any] struct {
	cfg     PollerConfig
	newSink func() Sink[T]

	mu      sync.Mutex
	all     []*poller[T]
	wg      sync.WaitGroup
	stopped bool
}

// NewPollers makes a set of pollers whose Sinks newSink makes, one per poller.
func NewPollers[T any](cfg PollerConfig, newSink func() Sink[T]) *Pollers[T] {
	cfg.PerRead = max(1, min(cfg.PerRead, cfg.Slots))
	return &Pollers[T]{cfg: cfg, newSink: newSink}
}

// Open binds a non-blocking UDP socket (IPv4, or IPv6 only) on addr and has a poller read it; its
// datagrams reach that poller's Sink with owner. Sockets are spread over the pollers by
// port. Closing the Conn takes it off its poller.
func (ps *Pollers[T]) Open(addr netip.AddrPort, owner T) (*Conn, error) {
	c, err := Open(Options{Local: addr})
	if err != nil {
		return nil, err
	}
	p, err := ps.pick(int(c.local.Port()))
	if err == nil {
		err = p.add(c, owner)
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (ps *Pollers[T]) pick(port int) (*poller[T], error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.stopped {
		return nil, net.ErrClosed
	}
	if ps.all == nil {
		for i := 0; i < runtime.GOMAXPROCS(0); i++ {
			p, err := newPoller(ps.cfg, ps.newSink())
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

// Stop ends the pollers and waits for them; sockets still open stay open (their owners
// close them) but are no longer read. Open fails afterwards.
func (ps *Pollers[T]) Stop() {
	ps.mu.Lock()
	ps.stopped = true
	all := ps.all
	ps.mu.Unlock()
	for _, p := range all {
		p.close()
	}
	ps.wg.Wait()
}

// pollEvents is how many ready sockets one epoll_wait(2) returns.
const pollEvents = 128

type pollEntry[T any] struct {
	c     *Conn
	owner T
}

// poller reads the sockets assigned to it. Its epoll descriptor is itself watched by the
// runtime poller, so its goroutine sleeps like any network reader.
type poller[T any] struct {
	cfg    PollerConfig
	sink   Sink[T]
	epfd   int
	f      *os.File // epfd, registered with the runtime poller
	rc     syscall.RawConn
	wait   func(fd uintptr) bool // made once: a wake-up allocates no closure
	mu     sync.Mutex
	conns  map[int32]pollEntry[T]
	closed bool

	events [pollEvents]unix.EpollEvent
	slots  [][]byte // cfg.Slots buffers of cfg.Size bytes
	batch  *Batch   // cfg.PerRead slots, pointed into slots at each read
	used   int      // slots holding datagrams the sink has not flushed
}

func newPoller[T any](cfg PollerConfig, sink Sink[T]) (*poller[T], error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, opError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, opError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "rawudp-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &poller[T]{cfg: cfg, sink: sink, epfd: epfd, f: f, rc: rc, conns: make(map[int32]pollEntry[T]),
		batch: NewBatch(cfg.PerRead, 0)}
	slab := make([]byte, cfg.Slots*cfg.Size)
	for i := 0; i < cfg.Slots; i++ {
		p.slots = append(p.slots, slab[i*cfg.Size:(i+1)*cfg.Size:(i+1)*cfg.Size])
	}
	p.wait = p.poll
	return p, nil
}

func (p *poller[T]) add(c *Conn, owner T) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return opError("epoll_ctl", err)
	}
	c.reg = p
	p.conns[int32(c.fd)] = pollEntry[T]{c: c, owner: owner}
	return nil
}

// remove runs in Conn.Close, with the Conn locked: after it, this poller never reads fd
// again, so the number may be reused.
func (p *poller[T]) remove(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	delete(p.conns, int32(fd))
}

func (p *poller[T]) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.f.Close() // wakes run, which then ends
}

func (p *poller[T]) run(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		if err := p.rc.Read(p.wait); err != nil {
			return // closed
		}
	}
}

// poll handles every ready socket, again and again until none is ready; then it asks
// the runtime poller to wait.
func (p *poller[T]) poll(fd uintptr) bool {
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
			e, ok := p.conns[p.events[i].Fd]
			p.mu.Unlock()
			if ok && p.read(e) {
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

// read takes up to PerRead datagrams from e's socket and hands each to the sink. It
// reports whether the socket may hold more.
func (p *poller[T]) read(e pollEntry[T]) bool {
	if p.used+p.batch.Slots() > len(p.slots) {
		p.flush()
	}
	for i := 0; i < p.batch.Slots(); i++ {
		p.batch.SetBuf(i, p.slots[p.used+i][p.cfg.Headroom:p.cfg.Size-p.cfg.Tailroom])
	}
	n, err := e.c.Recv(p.batch)
	if err != nil {
		// Closed meanwhile: nothing more. Else an ICMP error surfacing: datagrams may
		// wait behind it.
		return err != net.ErrClosed
	}
	first := p.used
	p.used += n
	for i := 0; i < n; i++ {
		p.sink.Datagram(e.owner, p.slots[first+i], p.batch.Len(i), p.batch.From(i), p.batch.Truncated(i))
	}
	return n == p.batch.Slots()
}

func (p *poller[T]) flush() {
	p.sink.Flush()
	p.used = 0
}
