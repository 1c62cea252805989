//go:build !linux

package relay

import (
	"net"
	"net/netip"
)

// batchReader reads one datagram at a time where recvmmsg(2) is not available.
type batchReader struct {
	c   *net.UDPConn
	buf []byte
}

func newBatchReader(c *net.UDPConn, bufSize int) (*batchReader, error) {
	return &batchReader{c: c, buf: make([]byte, bufSize)}, nil
}

// buffered is always false: every read takes one datagram.
func (b *batchReader) buffered() bool { return false }

func (b *batchReader) next() ([]byte, netip.AddrPort, error) {
	n, from, err := b.c.ReadFromUDPAddrPort(b.buf)
	if err != nil {
		return nil, from, err
	}
	return b.buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// tuneBuffers asks for larger kernel buffers, as far as the system allows.
func tuneBuffers(u *net.UDPConn, size int) {
	_ = u.SetReadBuffer(size)
	_ = u.SetWriteBuffer(size)
}

// sendBatch sends at once where sendmmsg(2) is not available.
type sendBatch struct{}

func (q *sendBatch) add(pc *packetConn, b []byte, to netip.AddrPort, payload int) {
	if pc.sendChannelData(b, to) == nil && payload != notRelayed {
		pc.s.metrics.BytesPeerToClient.Add(float64(payload))
		pc.s.metrics.PacketsPeerToClient.Inc()
	}
}

func (q *sendBatch) flush() {}

func socketFamily(*net.UDPConn) int { return 0 }
