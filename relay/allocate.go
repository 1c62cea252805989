package relay

import (
	"net/netip"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/metrics"
)

// budgetReason is the reason phrase of a 486 for a user over its byte budget, so that a
// client's log tells it from the allocation quota.
const budgetReason = "Allocation Quota Reached: daily byte budget used"

// allocate checks an authenticated Allocate: the requested transport, draining, and the
// quotas, for which it reserves a slot that pion's answer settles (gate.inspect).
func (g *gate) allocate(set *settings, b []byte, from netip.AddrPort, rep replier, k tupleKey, cred credentials) bool {
	m := &g.msg
	key := cred.key
	g.capLifetime(set, b, key)
	if g.s.allocs.exists(k) {
		return true // a retransmission (pion resends its answer) or 437
	}
	if rt, err := m.Get(stun.AttrRequestedTransport); err == nil && len(rt) == 4 && rt[0] != 17 {
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocUnsupportedTransport).Inc()
		g.respond(set, from, rep, stun.CodeUnsupportedTransProto, key)
		return false
	}
	v6, addrErr, ok := g.allocFamily(set, from, rep, key)
	if !ok {
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocError).Inc()
		return false
	}
	if g.s.draining.Load() {
		// Draining: send new clients elsewhere (300 with ALTERNATE-SERVER) or refuse
		// with 508, which clients treat as "try another server".
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocCapacity).Inc()
		if alt := set.alternate; alt.IsValid() {
			g.respond(set, from, rep, stun.CodeTryAlternate, key,
				&stun.AlternateServer{IP: alt.Addr().AsSlice(), Port: int(alt.Port())})
		} else {
			g.respondReason(set, from, rep, stun.CodeInsufficientCapacity, drainingReason, key)
		}
		return false
	}
	if ctl := g.s.ctl; ctl != nil && ctl.OverBudget(cred.userID) {
		// The user relayed its [limits] user_bytes_per_day: no new allocation until 00:00 UTC.
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocQuota).Inc()
		g.s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaUserBytes).Inc()
		g.refused(from, []byte(cred.username), ReasonOverBudget)
		g.respondReason(set, from, rep, stun.CodeAllocQuotaReached, budgetReason, key)
		return false
	}
	r := reservation{userID: cred.userID, transport: g.transport, username: cred.username, key: key, out: rep}
	switch g.s.allocs.reserve(k, r, set.userAllocations, set.totalAllocations) {
	case metrics.AllocQuota:
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocQuota).Inc()
		g.s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaUser).Inc()
		g.refused(from, []byte(cred.username), ReasonQuota)
		g.respond(set, from, rep, stun.CodeAllocQuotaReached, key)
		return false
	case metrics.AllocCapacity:
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocCapacity).Inc()
		g.s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaTotal).Inc()
		g.refused(from, []byte(cred.username), ReasonCapacity)
		g.respond(set, from, rep, stun.CodeInsufficientCapacity, key)
		return false
	}
	if !g.holdFamily(v6) {
		g.s.allocs.settle(k)
		g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocCapacity).Inc()
		g.respondReason(set, from, rep, stun.CodeInsufficientCapacity, "busy: try again", key)
		return false
	}
	if addrErr {
		g.addrErr.Store(&addressErrorNote{txid: m.TransactionID, key: key})
	}
	g.pending, g.hasPending = k, true
	return true
}
