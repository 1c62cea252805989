//go:build linux

package rawudp

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Epoll is an epoll set of Conns, each known by a tag, waited on by the calling thread
// itself (a blocking system call): for a loop that owns a locked OS thread and paces
// itself with short timeouts. (Pollers, instead, sleep in Go's runtime poller.)
type Epoll struct {
	fd     int
	events []unix.EpollEvent
}

// NewEpoll makes an empty set.
func NewEpoll() (*Epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, opError("epoll_create1", err)
	}
	return &Epoll{fd: fd}, nil
}

// Add watches c for datagrams to read; Wait reports it by tag. c must stay open while
// it is in the set (closing it takes it out).
func (e *Epoll) Add(c *Conn, tag int32) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if err := unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tag}); err != nil {
		return opError("epoll_ctl", err)
	}
	return nil
}

// Wait waits at most d for readable Conns and writes their tags into tags, returning how
// many (0 when d passed, or a signal interrupted the wait). d has nanosecond resolution
// with epoll_pwait2 (Linux 5.11+), and is rounded up to milliseconds before that, so
// that a pacing loop is not held to 1 ms steps where the kernel can do better.
func (e *Epoll) Wait(tags []int32, d time.Duration) (int, error) {
	if len(tags) == 0 {
		return 0, nil
	}
	if cap(e.events) < len(tags) {
		e.events = make([]unix.EpollEvent, len(tags))
	}
	ev := e.events[:len(tags)]
	n, err := e.wait(ev, d)
	if err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		return 0, opError("epoll_wait", err)
	}
	for i := 0; i < n; i++ {
		tags[i] = ev[i].Fd
	}
	return n, nil
}

func (e *Epoll) wait(ev []unix.EpollEvent, d time.Duration) (int, error) {
	if !noPwait2.Load() {
		ts := unix.NsecToTimespec(int64(d))
		r, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(e.fd), uintptr(unsafe.Pointer(&ev[0])),
			uintptr(len(ev)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if errno == 0 {
			return int(r), nil
		}
		if errno != unix.ENOSYS {
			return 0, errno
		}
		noPwait2.Store(true) // an older kernel: fall back for good
	}
	return unix.EpollWait(e.fd, ev, int((d+time.Millisecond-1)/time.Millisecond))
}

// noPwait2 is set once the kernel has said it has no epoll_pwait2.
var noPwait2 atomic.Bool

// Close closes the set (not the Conns in it).
func (e *Epoll) Close() error { return unix.Close(e.fd) }
