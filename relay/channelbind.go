package relay

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/metrics"
)

// channelBind checks an authenticated ChannelBind: the channel number, the channel cap
// and the peer.
func (g *gate) channelBind(set *settings, from netip.AddrPort, rep replier, k tupleKey, key []byte) bool {
	m := &g.msg
	ch, err := m.Get(stun.AttrChannelNumber)
	if err != nil || len(ch) != 4 {
		g.respond(set, from, rep, stun.CodeBadRequest, key)
		return false
	}
	n := binary.BigEndian.Uint16(ch)
	if n < minChannel || n > maxChannel || (set.strictChannels && n > maxChannelRFC8656) {
		g.respond(set, from, rep, stun.CodeBadRequest, key)
		return false
	}
	if a := g.s.allocs.lookup(k); a != nil {
		h := a.hot.Load()
		if _, rebind := h.peerOf(n); !rebind && len(h.channels) >= set.limits.ChannelsPerAllocation {
			g.s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaChannels).Inc()
			g.respond(set, from, rep, stun.CodeInsufficientCapacity, key)
			return false
		}
	}
	v, err := m.Get(stun.AttrXORPeerAddress)
	peer, ok := decodeXORAddress(v, m.TransactionID)
	if err != nil || !ok {
		g.respond(set, from, rep, stun.CodeBadRequest, key)
		return false
	}
	if !g.peerAllowed(set, peer) {
		g.respond(set, from, rep, stun.CodeForbidden, key)
		return false
	}
	if g.peerFamilyMismatch(k, peer) {
		g.respond(set, from, rep, stun.CodePeerAddrFamilyMismatch, key)
		return false
	}
	return true
}
