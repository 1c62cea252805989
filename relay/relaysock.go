package relay

import (
	"net/netip"

	"github.com/relayproject/relay/internal/rawudp"
)

// Relay sockets live outside Go's netpoller (internal/rawudp): a few pollers, one per
// Go processor, read every relay socket with recvmmsg(2), so that a datagram from a
// peer wakes no per-allocation goroutine and an idle allocation holds no goroutine
// stack of ours and no runtime poll state.

// A poller holds pollSlots datagrams before it must send what it has, and takes up to
// pollPerRead from one socket per system call.
const (
	pollSlots   = 64
	pollPerRead = 8
)

// newRelayPollers makes the pollers of a relay port range. Their buffers have room for
// the ChannelData header in front of each datagram and for stream padding behind it, so
// that data from a peer with a channel is framed in place and sent on from the buffer
// it was read into.
func newRelayPollers() *rawudp.Pollers[*relayConn] {
	return rawudp.NewPollers(rawudp.PollerConfig{
		Slots:    pollSlots,
		PerRead:  pollPerRead,
		Size:     relayBufSize,
		Headroom: channelDataHdrSize,
		Tailroom: 3,
	}, func() rawudp.Sink[*relayConn] { return &peerSink{} })
}

// peerSink is one poller's way on for datagrams from peers: ChannelData for UDP clients
// waits in its send batch, one sendmmsg(2) per listener socket per wake-up.
type peerSink struct{ out sendBatch }

func (k *peerSink) Datagram(c *relayConn, buf []byte, n int, from netip.AddrPort, truncated bool) {
	if truncated {
		c.ctr.dropped[dropMalformedIdx].Inc() // longer than any media datagram: dropped, not cut
		return
	}
	c.received(buf, n, from, &k.out)
}

func (k *peerSink) Flush() { k.out.flush() }
