//go:build linux

package relay

import (
	"net/netip"
	"syscall"

	"github.com/relayproject/relay/internal/rawudp"
)

// sendBatch gathers datagrams for UDP clients (ChannelData from peers during one poller
// wake-up, or the gate's answers to one read batch) and sends them with one sendmmsg(2)
// per listener socket. Its owner (a poller, a listener's read loop) is its only user;
// nothing here allocates after the first flush. The zero value is ready to use.
type sendBatch struct {
	n     int
	items [pollSlots]sendItem
	msgs  *rawudp.Batch
}

type sendItem struct {
	pc      *packetConn
	b       []byte
	to      netip.AddrPort
	payload int
}

// add queues b (a ChannelData message of payload bytes of data, or a response:
// notRelayed) for to through pc. b must stay untouched until flush.
func (q *sendBatch) add(pc *packetConn, b []byte, to netip.AddrPort, payload int) {
	if q.n == len(q.items) {
		q.flush()
	}
	q.items[q.n] = sendItem{pc: pc, b: b, to: to, payload: payload}
	q.n++
}

// flush sends everything queued, grouped by listener socket.
func (q *sendBatch) flush() {
	if q.n == 0 {
		return
	}
	if q.msgs == nil {
		q.msgs = rawudp.NewBatch(len(q.items), 0)
	}
	for start := 0; start < q.n; start++ {
		pc := q.items[start].pc
		if pc == nil {
			continue // sent with an earlier group
		}
		// Gather this socket's messages, in order, at the front of the batch.
		k := 0
		for i := start; i < q.n; i++ {
			it := &q.items[i]
			if it.pc != pc {
				continue
			}
			q.msgs.SetBuf(k, it.b)
			q.msgs.SetAddr(k, it.to, pc.family)
			// Move the item to the group's end, shifting the others up: a stable partition,
			// so every client's datagrams keep their order (and the group's payload sizes
			// end up at start..start+k).
			moved := *it
			copy(q.items[start+k+1:i+1], q.items[start+k:i])
			q.items[start+k] = moved
			k++
		}
		q.send(pc, start, k)
		for i := start; i < start+k; i++ {
			q.items[i].pc = nil
		}
		start += k - 1
	}
	for i := range q.items[:q.n] {
		q.items[i] = sendItem{}
	}
	q.n = 0
}

// send sends the batch's first k messages, whose payload sizes are items[start:start+k],
// through pc.
func (q *sendBatch) send(pc *packetConn, start, k int) {
	var bytes, packets int
	for from := 0; from < k; {
		n, err := q.msgs.SendVia(pc.rc, from, k)
		for i := from; i < from+n; i++ {
			if p := q.items[start+i].payload; p != notRelayed {
				bytes += p
				packets++
			}
		}
		from += n
		if err == nil {
			if n == 0 {
				break
			}
			continue
		}
		errno, ok := err.(syscall.Errno)
		if !ok {
			break // the listener closed
		}
		if errno == syscall.EAGAIN {
			// The socket buffer is full. Waiting for room would stop this poller, and every
			// relay socket on it, behind one listener: drop the datagram, as the kernel
			// would, and count it.
			pc.ctr.dropped[dropBacklogIdx].Inc()
		} else {
			// This destination refused (unreachable, no route); the rest still go.
			pc.ctr.listenerError(pc.gate.transport)
		}
		from++
	}
	if packets > 0 {
		pc.ctr.toClient.addBatch(bytes, packets)
	}
}
