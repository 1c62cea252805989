package relay

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A TCP/TLS client that stops reading never holds up the caller (a poller serving other
// allocations): its ChannelData waits in a bounded outbox, the excess is dropped and
// counted, what was queued arrives padded and in order once the client reads, and
// closing the connection ends the writer.
func TestStreamOutboxNeverBlocks(t *testing.T) {
	s := startServer(t, nil)
	l := &streamListener{s: s.Server, transport: "tcp", conns: map[*streamConn]struct{}{}}
	server, client := net.Pipe() // synchronous: nothing is buffered until the client reads
	defer client.Close()
	sc := &streamConn{Conn: server, l: l, ctr: s.counters, gate: newGate(s.Server, "tcp", addrPortOf(s.Addrs("tcp")[0]), true)}
	before := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBacklog))

	const n = 3 * maxStreamOutbox
	done := make(chan []int, 1)
	go func() {
		var queued []int
		for i := 0; i < n; i++ {
			msg := channelData(0x4001, []byte{byte(i >> 8), byte(i), 'x'}) // 7 bytes, padded to 8
			if sc.sendChannelData(msg[:7], netip.AddrPort{}) == nil {
				queued = append(queued, i)
			}
		}
		done <- queued
	}()
	var order []int
	select {
	case order = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("sendChannelData blocked on a client that does not read")
	}
	queued := len(order)
	// One may already be in the writer's hands, blocked on the pipe.
	if queued < maxStreamOutbox || queued > maxStreamOutbox+1 {
		t.Fatalf("queued %d of %d, want the outbox size %d (+1 being written)", queued, n, maxStreamOutbox)
	}
	if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBacklog)) - before; int(got) != n-queued {
		t.Fatalf("dropped{reason=backlog} +%v, want %d", got, n-queued)
	}
	frame := make([]byte, 8)
	for _, i := range order {
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(client, frame); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		want := []byte{0x40, 0x01, 0, 3, byte(i >> 8), byte(i), 'x', 0}
		if !bytes.Equal(frame, want) {
			t.Fatalf("frame %d: % x, want % x", i, frame, want)
		}
	}
	_ = sc.Close()
	if err := sc.sendChannelData(channelData(0x4001, []byte("late")), netip.AddrPort{}); err == nil {
		t.Fatal("queued after close")
	}
}
