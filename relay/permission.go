package relay

import (
	"net/netip"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/metrics"
)

// createPermission checks an authenticated CreatePermission: every peer against the peer
// policy, and the permission cap.
func (g *gate) createPermission(set *settings, from netip.AddrPort, rep replier, k tupleKey, key []byte) bool {
	m := &g.msg
	// Every peer must pass, or nothing is installed (RFC 8656 §9.2).
	peers := 0
	a := g.s.allocs.lookup(k)
	var h *hotState
	if a != nil {
		h = a.hot.Load()
	}
	added := 0
	for _, a := range m.Attributes {
		if a.Type != stun.AttrXORPeerAddress {
			continue
		}
		peer, ok := decodeXORAddress(a.Value, m.TransactionID)
		if !ok {
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
		peers++
		if h != nil {
			if !h.permitted(peer.Addr().Unmap()) {
				added++
			}
		}
	}
	if peers == 0 {
		g.respond(set, from, rep, stun.CodeBadRequest, key)
		return false
	}
	if h != nil && len(h.perms)+added > set.limits.PermissionsPerAllocation {
		g.s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaPermissions).Inc()
		g.respond(set, from, rep, stun.CodeInsufficientCapacity, key)
		return false
	}
	return true
}
