//go:build !linux

package relay

import "net/netip"

// sendBatch sends at once where sendmmsg(2) is not available.
type sendBatch struct{}

func (q *sendBatch) add(pc *packetConn, b []byte, to netip.AddrPort, payload int) {
	if pc.sendChannelData(b, to) == nil && payload != notRelayed {
		pc.ctr.toClient.add(payload)
	}
}

func (q *sendBatch) flush() {}
