//go:build linux

package wsconn

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A client has a message echoed that is larger than its socket's send buffer. The poller writes
// it while handling that client's own read event (so the client's epoll item is on the
// ready list, re-added by level triggering); the write is short, the client's ACKs free
// the buffer before arm(true) adds EPOLLOUT, and EPOLL_CTL_MOD on an item already on
// the ready list wakes nobody. A poller that parked without polling once more left
// the rest of the frame unwritten, although the client read.
func TestLargeMessageToSelfDelivered(t *testing.T) {
	ts := startServer(t, testOptions{})
	const tries = 30
	stuck := 0
	for i := range tries {
		id := fmt.Sprintf("self%d", i)
		rc := ts.rawDial(t, id)
		p := ts.conn(id).c
		p.mu.Lock()
		fd := p.fd
		if fd >= 0 {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
		}
		p.mu.Unlock()
		if fd < 0 {
			t.Fatal("peer not on a poller")
		}
		msg := strings.Repeat("x", 60<<10) // echoed back
		rc.Write(clientFrame(true, OpText, []byte(msg), true))

		// Read the relayed frame, up to 2 s.
		_ = rc.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var h [4]byte
		got := 0
		want := -1
		if _, err := io.ReadFull(rc.R, h[:]); err == nil && h[1]&0x7f == 126 {
			want = int(binary.BigEndian.Uint16(h[2:]))
			buf := make([]byte, want)
			n, _ := io.ReadFull(rc.R, buf)
			got = n
		}
		if got != want || want < 0 {
			stuck++
			p.mu.Lock()
			t.Logf("peer %s: got %d of %d payload bytes after 2 s; server pending=%d armed=%v", id, got, want, len(p.pending), p.armed)
			p.mu.Unlock()
		}
		_ = rc.Conn.Close()
	}
	if stuck > 0 {
		t.Fatalf("%d of %d self-sent messages stuck in pending", stuck, tries)
	}
}

// TCP urgent data: read(2) stops at the urgent mark, so a read shorter than the buffer
// does not mean the socket is drained, and nothing wakes the poller again for the bytes
// after the mark. Two pings sent as one segment with an urgent byte between them: the
// second must be answered.
func TestUrgentDataDoesNotStall(t *testing.T) {
	ts := startServer(t, testOptions{})
	const tries = 5
	lost := 0
	for i := range tries {
		rc := ts.rawDial(t, fmt.Sprintf("urg%d", i))
		raw, _ := rc.Conn.(*net.TCPConn).SyscallConn()
		f1 := clientFrame(true, OpPing, []byte("a"), true)
		f2 := clientFrame(true, OpPing, []byte("b"), true)
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1)
			_ = unix.Sendto(int(fd), append(append([]byte(nil), f1...), '!'), unix.MSG_OOB, nil)
			_, _ = unix.Write(int(fd), f2)
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 0)
		})
		// Both reads are answered, the second (after the mark) with "b": pongs of one
		// read are coalesced, but these are two reads.
		answered := false
		deadline := time.Now().Add(2 * time.Second)
		for !answered {
			_ = rc.Conn.SetReadDeadline(deadline)
			var h [3]byte
			if _, err := io.ReadFull(rc.R, h[:]); err != nil {
				break
			}
			answered = h[0]&0x0f == OpPong && h[2] == 'b'
		}
		if !answered {
			lost++
			t.Logf("try %d: no pong for the ping after the urgent byte within 2 s", i)
		}
		_ = rc.Conn.Close()
	}
	if lost > 0 {
		t.Fatalf("%d of %d: the ping after the urgent byte was not read", lost, tries)
	}
}
