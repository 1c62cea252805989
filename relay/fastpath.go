package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// The fast path relays ChannelData in both directions on relay's own sockets, without
// pion and without allocating: pion keeps the control plane (auth, allocation,
// permission and channel lifetimes) and reports it through its events, which keep each
// allocation's hotState; packets only read that state.

// Drop reasons counted in relay_turn_dropped_total.
const (
	dropNoAllocation = "no_allocation"
	dropNoChannel    = "no_channel"
	dropNoPermission = "no_permission"
	dropMalformed    = "malformed"
	dropRateLimited  = "rate_limited" // unauthenticated requests past unauth_per_ip: no reply
	dropAuthBlocked  = "auth_blocked" // past auth_failures_per_ip / _per_user: no reply
	dropBandwidth    = "bandwidth"    // over max_bps / user_max_bps
	dropBacklog      = "backlog"      // no room to wait: the queue for Data indications, a stream client's outbox, a full send buffer
	dropSendError    = "send_error"   // the kernel refused the send to a peer (no route, a broadcast address, ...)
	dropBudget       = "budget"       // the user relayed its [limits] user_bytes_per_day
)

// notRelayed marks a queued datagram that is a response, not relayed data, so that the
// relayed bytes and packets counters leave it out.
const notRelayed = -1

// maxCachedAllocations bounds a gate's cache before it sweeps out dead entries.
const maxCachedAllocations = 1024

// channelData relays a ChannelData message from a client to its peer.
func (g *gate) channelData(b []byte, from netip.AddrPort) {
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if channelDataHdrSize+n > len(b) {
		g.ctr.dropped[dropMalformedIdx].Inc() // a length field that lies: never read past the datagram
		return
	}
	a := g.allocation(from)
	if a == nil {
		g.ctr.dropped[dropNoAllocationIdx].Inc()
		return
	}
	h := a.hot.Load()
	peer, ok := h.peerOf(binary.BigEndian.Uint16(b[0:2]))
	if !ok {
		g.ctr.dropped[dropNoChannelIdx].Inc()
		return
	}
	if !h.permitted(peer.Addr()) {
		g.ctr.dropped[dropNoPermissionIdx].Inc() // the permission expired; the channel alone is not enough
		return
	}
	if a.conn != nil {
		_, _ = a.conn.writeToPeer(b[channelDataHdrSize:channelDataHdrSize+n], peer)
	}
}

// allocation finds the live allocation of a client of this socket.
func (g *gate) allocation(from netip.AddrPort) *allocation {
	if a, ok := g.cache[from]; ok {
		if !a.dead.Load() {
			return a
		}
		delete(g.cache, from)
	}
	a := g.s.allocs.lookup(tupleKey{client: from, local: g.local, stream: g.stream})
	if a == nil {
		return nil
	}
	if g.cache == nil {
		g.cache = make(map[netip.AddrPort]*allocation)
	}
	if len(g.cache) >= maxCachedAllocations {
		for k, c := range g.cache {
			if c.dead.Load() {
				delete(g.cache, k)
			}
		}
		if len(g.cache) >= maxCachedAllocations {
			clear(g.cache) // all live: start over rather than grow without bound
		}
	}
	g.cache[from] = a
	return a
}

// sendChannelData sends a ChannelData message to a UDP client.
func (c *packetConn) sendChannelData(b []byte, to netip.AddrPort) error {
	_, err := c.WriteToUDPAddrPort(b, to)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.ctr.listenerError(c.gate.transport)
	}
	return err
}

// writeToPeer sends a client's data to a peer: the per-datagram peer policy, local
// delivery to our own public address, the counters.
func (c *relayConn) writeToPeer(p []byte, to netip.AddrPort) (int, error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	a := c.alloc.Load()
	var u *Usage // the user's byte budget, if it has one
	if a != nil {
		u = a.usage
	}
	if a != nil && !admit(len(p), a.upBPS, a.userUpBPS) {
		c.ctr.dropped[dropBandwidthIdx].Inc()
		return len(p), nil
	}
	if u != nil && !u.allow() {
		c.overBudget()
		return len(p), nil
	}
	if reason := c.r.set.Load().policy.CheckAddr(to); reason != DenyNone {
		c.ctr.peerDenied(reason)
		return len(p), nil // dropped, as RFC 8656 drops datagrams without permission
	}
	if to.Addr() == c.r.advertise && c.r.advertise != c.r.bind {
		// Our own public address behind a 1:1 NAT: deliver locally instead of hairpinning.
		to = netip.AddrPortFrom(c.r.bind, to.Port())
	}
	// The budget counts the datagram before it leaves: counted after, the peer's answer
	// could be checked against the budget before this datagram was counted in it.
	if u != nil {
		u.count(len(p))
	}
	n, err := c.sock.WriteTo(p, to)
	if err != nil {
		// Lost, and counted like any other drop. The kernel's reason (EACCES for a
		// broadcast address, ENETUNREACH, a full send buffer) is not logged per datagram;
		// pion, when the send was its own, logs it at debug level.
		c.ctr.dropped[dropSendErrorIdx].Inc()
		if u != nil {
			u.count(-len(p))
		}
		return n, err
	}
	c.ctr.toPeer.add(n)
	c.c2pBytes.Add(uint64(n))
	c.c2pPackets.Add(1)
	return n, nil
}

// overBudget counts a datagram dropped because its user relayed its bytes for the day.
func (c *relayConn) overBudget() {
	c.ctr.dropped[dropBudgetIdx].Inc()
	c.budgetDropped.Add(1)
}

// WriteTo is pion's way to a peer (Send indications, and ChannelData when the fast path
// is not the one reading).
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, net.InvalidAddrError("relay: not a UDP address")
	}
	return c.writeToPeer(p, ua.AddrPort())
}

// relayBufSize is the size of a buffer datagrams from peers are read into (the pollers',
// and those tests hand to fromPeer): pion's own (pioncontract.go), so that whatever
// waits for pion fits its buffer.
const relayBufSize = pionReadBufSize

// fromPeer handles n bytes from a peer, read into buf[4:] (buf has 3 bytes of room
// behind them for stream padding). It reports whether it is done with them (relayed as
// ChannelData, or dropped); otherwise pion is to see them. ChannelData for UDP clients
// goes into out when there is one, to be sent with the rest of the batch.
func (c *relayConn) fromPeer(buf []byte, n int, from netip.AddrPort, out *sendBatch) bool {
	a := c.alloc.Load()
	if a == nil {
		return false // pion has not reported the allocation yet: let it decide
	}
	h := a.hot.Load()
	if !h.permitted(from.Addr()) {
		c.ctr.dropped[dropNoPermissionIdx].Inc()
		return true
	}
	if !admit(n, a.downBPS, a.userDownBPS) {
		c.ctr.dropped[dropBandwidthIdx].Inc()
		return true
	}
	if u := a.usage; u != nil {
		if !u.allow() {
			c.overBudget()
			return true
		}
		u.count(n)
	}
	c.p2cBytes.Add(uint64(n))
	c.p2cPackets.Add(1)
	ch, ok := h.channelOf(from)
	if !ok || a.out == nil {
		return false // permitted, no channel: pion sends a Data indication
	}
	binary.BigEndian.PutUint16(buf[0:2], ch)
	binary.BigEndian.PutUint16(buf[2:4], uint16(n))
	if pc, ok := a.out.(*packetConn); ok && out != nil {
		out.add(pc, buf[:channelDataHdrSize+n], a.client, n)
		return true
	}
	if a.out.sendChannelData(buf[:channelDataHdrSize+n], a.client) == nil {
		c.ctr.toClient.add(n)
	}
	return true
}
