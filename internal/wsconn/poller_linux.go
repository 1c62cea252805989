//go:build linux

package wsconn

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A poller reads many plain TCP WebSockets with one goroutine: the sockets are in an
// epoll instance of our own, and when one is readable the poller reads what is there
// into a buffer it shares between all of them, parses the frames and handles the
// messages inline. So an idle peer holds no goroutine and no buffer. The socket is a
// duplicate of the one net/http accepted, taken out of Go's own poller.
//
// The epoll descriptor itself sits in Go's poller: the poller goroutine asks it for
// events without waiting and parks like any goroutine reading a socket when there are
// none. Blocking in epoll_wait instead would hold a thread in a system call, which the
// runtime keeps taking its processor back from, at a cost per wake-up.

// readBufferSize is each poller's read buffer: one read takes what a client sent.
const readBufferSize = 64 << 10

// readEvents are the events a socket is always watched for; EPOLLOUT is added while
// writes wait.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP

type poller struct {
	log  *slog.Logger
	epfd int
	ep   *os.File        // epfd, in Go's poller
	rc   syscall.RawConn // ep's, to wait for events
	wake int             // an eventfd: stop wakes the poller through it
	buf  []byte

	mu      sync.Mutex
	conns   map[int32]*Conn
	stopped bool
}

// Pollers are the epoll readers of plain TCP sockets. A nil or empty Pollers reads
// every socket on a goroutine of its own.
type Pollers struct {
	list []*poller
	next atomic.Uint32
	wg   sync.WaitGroup
}

// StartPollers starts n pollers, or one per CPU Go may use (up to 8) when n <= 0; log
// tells of a poller that stopped on an error.
func StartPollers(n int, log *slog.Logger) (*Pollers, error) {
	if n <= 0 {
		n = max(1, min(runtime.GOMAXPROCS(0), 8))
	}
	ps := &Pollers{}
	for range n {
		pl, err := newPoller(log)
		if err != nil {
			ps.Stop()
			return nil, err
		}
		ps.list = append(ps.list, pl)
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			pl.run()
		}()
	}
	return ps, nil
}

// Len is the number of pollers.
func (ps *Pollers) Len() int {
	if ps == nil {
		return 0
	}
	return len(ps.list)
}

// Stop stops the pollers, closes the sockets they still read (each Handler's OnClose
// is called) and waits for them to return.
func (ps *Pollers) Stop() {
	if ps == nil {
		return
	}
	for _, pl := range ps.list {
		pl.stop()
	}
	ps.wg.Wait()
}

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, err
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, err
	}
	ep := os.NewFile(uintptr(epfd), "signaling-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		_ = unix.Close(wake)
		return nil, err
	}
	return &poller{log: log, epfd: epfd, ep: ep, rc: rc, wake: wake, buf: make([]byte, readBufferSize),
		conns: make(map[int32]*Conn)}, nil
}

func (pl *poller) run() {
	events := make([]unix.EpollEvent, 256)
	var werr error
	err := pl.rc.Read(func(fd uintptr) bool {
		for {
			n, errno := epollWaitNow(int(fd), events)
			switch {
			case errno == unix.EINTR:
				continue
			case errno != 0:
				werr = errno
				return true
			case n == 0:
				return false // park until the epoll instance has events
			}
			// Poll again until epoll reports nothing: a readiness left on its list after
			// this poll (data past a short read, a FIN behind the last data, room a write
			// was waiting for when EPOLLOUT was asked) makes no new edge for Go's poller,
			// so parking with it there would strand that socket.
			if pl.dispatch(events[:n]) {
				return true
			}
		}
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		pl.log.Error("websocket poller stopped", "err", err)
	}
	pl.shutdown()
}

// dispatch handles one batch of events; true when the poller is to stop.
func (pl *poller) dispatch(events []unix.EpollEvent) (stop bool) {
	for _, ev := range events {
		if ev.Fd == int32(pl.wake) {
			pl.mu.Lock()
			stopped := pl.stopped
			pl.mu.Unlock()
			if stopped {
				return true
			}
			continue
		}
		pl.mu.Lock()
		c := pl.conns[ev.Fd]
		pl.mu.Unlock()
		if c == nil {
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			c.mu.Lock()
			if !c.closed {
				c.flushLocked()
			}
			c.mu.Unlock()
		}
		if ev.Events&^unix.EPOLLOUT != 0 {
			c.readFd(pl.buf)
		}
	}
	return false
}

// epollWaitNow takes the events that are ready without waiting (epoll_pwait, as
// epoll_wait is missing on some architectures).
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	return int(n), errno
}

// stop asks the poller to close its sockets and return.
func (pl *poller) stop() {
	pl.mu.Lock()
	if pl.stopped {
		// Stopped already (a second Close, or the poller ended on an error): its eventfd
		// may be closed and its number reused.
		pl.mu.Unlock()
		return
	}
	pl.stopped = true
	pl.mu.Unlock()
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; any non-zero value wakes
	_, _ = unix.Write(pl.wake, one[:])
}

// shutdown finishes every socket still registered and closes the epoll instance.
func (pl *poller) shutdown() {
	pl.mu.Lock()
	pl.stopped = true
	conns := pl.conns
	pl.conns = nil
	pl.mu.Unlock()
	for _, c := range conns {
		c.finish()
	}
	_ = pl.ep.Close()
	_ = unix.Close(pl.wake)
}

// add registers c's socket; false if the poller has stopped.
func (pl *poller) add(c *Conn) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.stopped {
		return false
	}
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(c.fd)}
	if unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev) != nil {
		return false
	}
	pl.conns[int32(c.fd)] = c
	return true
}

// take hands c's socket to one of the pollers: c.nc is replaced by a duplicate of its
// descriptor and closed, which takes the socket out of Go's poller. buffered (what
// net/http read past the handshake, a pipelining client's first frames) is handled
// here, before the socket is in the epoll instance, so nothing else reads meanwhile.
// False if there are no pollers or the socket cannot be taken (not TCP): c stays on
// the goroutine path.
func (ps *Pollers) take(c *Conn, buffered []byte) bool {
	if ps == nil || len(ps.list) == 0 {
		return false
	}
	pl := ps.list[ps.next.Add(1)%uint32(len(ps.list))]
	tc, sock, tlsConn := socketOf(c.nc)
	if tc == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	c.mu.Lock()
	if c.closed { // closed during the handshake (a reconnect, Close)
		c.mu.Unlock()
		c.h.OnClose()
		return true
	}
	fd := -1
	if rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }) != nil || err != nil || fd < 0 {
		c.mu.Unlock()
		return false
	}
	var records *tlsRecords
	if sock != nil {
		// From here the TLS records are ours (tlsrecord.go); what tls.Conn decrypted
		// and nobody read yet is handled first, as net/http's buffered bytes are.
		records, buffered, err = sock.takeOver(tlsConn, buffered)
		switch {
		case errors.Is(err, errNotTLS13): // tls.Conn keeps it, untouched
			c.mu.Unlock()
			_ = unix.Close(fd)
			return false
		case err != nil: // the client closed or sent a bad record meanwhile
			_ = unix.Close(fd)
			c.closeLocked()
			c.mu.Unlock()
			c.h.OnClose()
			return true
		}
	}
	_ = tc.Close() // the duplicate keeps the socket open (and non-blocking)
	c.fd, c.nc, c.raw, c.pl, c.tls = fd, nil, nil, pl, records
	c.mu.Unlock()
	if len(buffered) > 0 && !c.consume(buffered) {
		c.finish()
		return true
	}
	if !pl.add(c) {
		c.finish()
	}
	return true
}

// readFd reads what the client sent, on the poller's goroutine: one read; epoll
// reports the socket again while more is there.
func (c *Conn) readFd(buf []byte) {
	if c.dead.Load() {
		c.finish()
		return
	}
	n, eof, err := readFdOnce(c.fd, buf)
	switch {
	case err != nil || eof:
		c.finish()
	case n == 0:
	case c.tls != nil:
		if !c.openTLS(buf[:n]) {
			c.finish()
		}
	case !c.consume(buf[:n]):
		c.finish()
	}
}

// finish closes the socket and releases the peer, once; on the poller's goroutine (or
// the handshake's, when the poller had stopped).
func (c *Conn) finish() {
	c.mu.Lock()
	c.closeLocked()
	fd := c.fd
	if fd >= 0 {
		// Closing our descriptor, the socket's only one, also takes it out of the epoll
		// instance; deleting it first keeps the table and the kernel in step while the
		// poller runs. (After shutdown the table is gone and so may be the epoll fd.)
		c.pl.mu.Lock()
		if c.pl.conns[int32(fd)] == c {
			delete(c.pl.conns, int32(fd))
			_ = unix.EpollCtl(c.pl.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		c.pl.mu.Unlock()
		_ = unix.Close(fd)
		c.fd = -1
		if c.tls != nil {
			c.tls.forget() // nothing seals or opens a record after this
		}
	}
	c.mu.Unlock()
	if fd >= 0 {
		c.rd.reset()
		c.h.OnClose()
	}
}

// writeFrameLocked writes one frame now, leaving what the socket does not take
// pending. Only when nothing else waits.
func (c *Conn) writeFrameLocked(op byte, b []byte) {
	buf := getScratch()
	*buf = appendFrame(*buf, op, b)
	c.writeLocked(*buf)
	putScratch(buf)
}

// writeLocked writes encoded frames b, as TLS records on a wss socket; what the
// socket does not take is kept pending and written when the poller reports the socket
// writable.
func (c *Conn) writeLocked(b []byte) {
	if c.tls != nil {
		buf := getScratch()
		sealed, err := c.tls.sealApplication(*buf, b)
		*buf = sealed
		if err == nil {
			c.writeRawLocked(sealed)
		} else {
			c.closeLocked()
		}
		putScratch(buf)
		return
	}
	c.writeRawLocked(b)
}

// writeRawLocked writes b as it is, after what is pending.
func (c *Conn) writeRawLocked(b []byte) {
	if len(c.pending) > 0 {
		c.pending = append(c.pending, b...)
		return
	}
	n, err := writeFd(c.fd, b)
	if err != nil {
		c.closeLocked()
		return
	}
	if n < len(b) {
		c.pending = append([]byte(nil), b[n:]...)
		c.stuck.Store(now())
		c.arm(true)
	}
}

// flushLocked writes what waits: the pending bytes, then queued frames coalesced into
// writes of up to maxCoalesce bytes, until the socket takes no more.
func (c *Conn) flushLocked() {
	for !c.closed {
		if len(c.pending) > 0 {
			n, err := writeFd(c.fd, c.pending)
			if err != nil {
				c.closeLocked()
				return
			}
			if n > 0 {
				c.stuck.Store(now())
			}
			if c.pending = c.pending[n:]; len(c.pending) > 0 {
				c.arm(true)
				return
			}
			c.pending = nil
		}
		if len(c.outbox) == 0 && c.tls != nil && c.tls.updateDue {
			// The KeyUpdate a client asked for while writes waited: it goes out now
			// that they are written, and what it leaves pending on the next turn.
			c.sendKeyUpdateLocked()
			continue
		}
		if len(c.outbox) == 0 {
			c.outbox = nil
			c.stuck.Store(0)
			c.arm(false)
			return
		}
		buf := getScratch()
		k, moved := 0, 0
		for ; k < len(c.outbox) && (k == 0 || len(*buf)+len(c.outbox[k].b)+14 <= maxCoalesce); k++ {
			*buf = appendFrame(*buf, c.outbox[k].op, c.outbox[k].b)
			moved += len(c.outbox[k].b)
			c.outbox[k] = outFrame{}
		}
		c.outbox = c.outbox[k:]
		c.releaseLocked(moved)
		c.writeLocked(*buf) // what it leaves pending is written on the next turn
		putScratch(buf)
	}
}

// arm asks the poller for EPOLLOUT while writes wait, and stops asking after.
func (c *Conn) arm(on bool) {
	if c.armed == on || c.fd < 0 {
		return
	}
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(c.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	if unix.EpollCtl(c.pl.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev) == nil {
		c.armed = on
	}
}

// writeFd writes to a non-blocking socket: a full socket buffer is a short write, not
// an error.
func writeFd(fd int, b []byte) (int, error) {
	for {
		n, err := rawIO(unix.SYS_WRITE, fd, b)
		switch err {
		case 0:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, err
		}
	}
}

// readFdOnce reads from a non-blocking socket: 0, nil when nothing is there.
func readFdOnce(fd int, b []byte) (n int, eof bool, err error) {
	for {
		n, errno := rawIO(unix.SYS_READ, fd, b)
		switch errno {
		case 0:
			return n, n == 0, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, false, nil
		default:
			return 0, false, errno
		}
	}
}

// rawIO is read(2) or write(2) without telling the scheduler: on a non-blocking socket
// it returns at once, and a goroutine marked as in a system call on every message
// keeps the runtime's monitor thread waking up to take its processor back.
func rawIO(trap uintptr, fd int, b []byte) (int, unix.Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, errno := unix.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	return int(n), errno
}

func shutdownFd(fd int) { _ = unix.Shutdown(fd, unix.SHUT_RDWR) }

// socketOf returns the TCP connection under nc: nc itself, or the one under a
// tls.Conn from NewTLSListener (with its tlsSock). nil if there is none.
func socketOf(nc net.Conn) (*net.TCPConn, *tlsSock, *tls.Conn) {
	switch nc := nc.(type) {
	case *net.TCPConn:
		return nc, nil, nil
	case *tls.Conn:
		if s, ok := nc.NetConn().(*tlsSock); ok {
			if tc, ok := s.Conn.(*net.TCPConn); ok {
				return tc, s, nc
			}
		}
	}
	return nil, nil, nil
}

// openTLS reads the TLS records in data (tlsrecord.go) and handles what they carry;
// false once the connection is ending.
func (c *Conn) openTLS(data []byte) bool {
	stop, err := c.tls.open(data, c.consume, c.keyUpdate)
	if stop || err == nil {
		return !stop
	}
	var re *recordError
	switch {
	case errors.Is(err, errCloseNotify):
		c.alert(alertCloseNotify)
	case errors.As(err, &re) && re.alert != alertNone:
		c.alert(re.alert)
	}
	return false
}

// keyUpdate is told of a KeyUpdate from the client. Each counts against the Handler's
// Admit as a control frame: a KeyUpdate costs the server a key derivation and, when
// it asks for ours, a write, as a ping costs a pong, so a flood of them meets the
// same limit. Ours, when asked for, is due before our next application data (RFC 8446
// 4.6.3); it goes out at once only when admitted and nothing waits to be written, so
// a client that asks again and again while it reads nothing gets one KeyUpdate, not
// one held for it per request (the RFC lets a silent endpoint answer many requests
// with a single update).
func (c *Conn) keyUpdate(requested bool) error {
	admitted := c.h.Admit(true)
	if !requested {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tls.updateDue = true
	if admitted && len(c.pending) == 0 {
		c.sendKeyUpdateLocked()
	}
	return nil
}

// sendKeyUpdateLocked writes our KeyUpdate: after what is already sealed, before
// anything sealed later.
func (c *Conn) sendKeyUpdateLocked() {
	if c.closed {
		return
	}
	buf := getScratch()
	sealed, err := c.tls.sealKeyUpdate(*buf, false)
	*buf = sealed
	if err == nil {
		c.writeRawLocked(sealed)
	} else {
		c.closeLocked()
	}
	putScratch(buf)
}

// alert tells the client why the connection ends (best effort).
func (c *Conn) alert(desc byte) {
	c.mu.Lock()
	c.alertLocked(desc)
	c.mu.Unlock()
}

func (c *Conn) alertLocked(desc byte) {
	if c.closed || len(c.pending) > 0 {
		return
	}
	buf := getScratch()
	if sealed, err := c.tls.sealAlert(*buf, desc); err == nil {
		*buf = sealed
		_, _ = writeFd(c.fd, sealed)
	}
	putScratch(buf)
}
