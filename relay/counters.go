package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/metrics"
)

// counters are the Prometheus counters the data path moves, in one place and labelled
// by what became of a datagram: relayed (each way), dropped (by reason), refused by the
// peer policy (by reason). Every label is resolved once, in New, so that a datagram
// never looks one up. The data path (the gates, relay sockets, client sockets, the
// pollers' send batches, stream outboxes) holds a pointer to them rather than reaching
// back through the Server.
type counters struct {
	// Relayed: bytes and datagrams passed on, client to peer and peer to client
	// (relay_turn_relayed_bytes_total, relay_turn_relayed_packets_total).
	toPeer, toClient flow

	// Dropped: neither relayed nor answered, indexed by the drop*Idx constants
	// (relay_turn_dropped_total{reason}; the reasons are in fastpath.go).
	dropped [dropCount]prometheus.Counter

	// Refused by the peer policy: datagrams, and the requests (CreatePermission,
	// ChannelBind) that name such a peer (relay_turn_peer_denied_total{reason}).
	denied map[DenyReason]prometheus.Counter

	// A client socket's read or write failed (relay_turn_listener_errors_total{transport}).
	listenerErrors map[string]prometheus.Counter
}

// flow counts one direction of relayed data.
type flow struct{ bytes, packets prometheus.Counter }

func (f *flow) add(n int) {
	f.bytes.Add(float64(n))
	f.packets.Inc()
}

// addBatch counts packets datagrams of bytes bytes in all.
func (f *flow) addBatch(bytes, packets int) {
	f.bytes.Add(float64(bytes))
	f.packets.Add(float64(packets))
}

// Indexes of counters.dropped, in the order of dropReasons.
const (
	dropNoAllocationIdx = iota
	dropNoChannelIdx
	dropNoPermissionIdx
	dropMalformedIdx
	dropRateLimitedIdx
	dropAuthBlockedIdx
	dropBandwidthIdx
	dropBacklogIdx
	dropSendErrorIdx
	dropBudgetIdx
	dropCount
)

// dropReasons are the label values of counters.dropped, by index.
var dropReasons = [dropCount]string{dropNoAllocation, dropNoChannel, dropNoPermission, dropMalformed,
	dropRateLimited, dropAuthBlocked, dropBandwidth, dropBacklog, dropSendError, dropBudget}

// newCounters resolves every label; each value exists from the start, so dashboards and
// alerts see zeros rather than nothing.
func newCounters(m *metrics.Metrics) *counters {
	c := &counters{
		toPeer:         flow{bytes: m.BytesClientToPeer, packets: m.PacketsClientToPeer},
		toClient:       flow{bytes: m.BytesPeerToClient, packets: m.PacketsPeerToClient},
		denied:         make(map[DenyReason]prometheus.Counter),
		listenerErrors: make(map[string]prometheus.Counter),
	}
	for i, r := range dropReasons {
		c.dropped[i] = m.Dropped.WithLabelValues(r)
	}
	for _, r := range []DenyReason{DenyLoopback, DenyPrivate, DenyLinkLocal, DenyUnspecified, DenyMulticast,
		DenyReserved, DenyOperator, DenyRelayPort, DenyInvalid} {
		c.denied[r] = m.PeerDenied.WithLabelValues(string(r))
	}
	for _, t := range []string{metrics.TransportUDP, metrics.TransportTCP, metrics.TransportTLS} {
		c.listenerErrors[t] = m.ListenerErrors.WithLabelValues(t)
	}
	return c
}

// peerDenied counts a datagram to a peer the policy refuses.
func (c *counters) peerDenied(r DenyReason) {
	if n, ok := c.denied[r]; ok {
		n.Inc()
	}
}

// listenerError counts a failed read or write on a client socket of transport.
func (c *counters) listenerError(transport string) {
	if n, ok := c.listenerErrors[transport]; ok {
		n.Inc()
	}
}
