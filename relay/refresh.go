package relay

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// refresh checks an authenticated Refresh: a REQUESTED-ADDRESS-FAMILY other than the
// allocation's gets 443 (RFC 6156 §5.2, RFC 8656 §7.3; pion ignores the attribute), its
// lifetime is capped, and a lifetime of 0 (release) is noted for the allocation log.
func (g *gate) refresh(set *settings, b []byte, from netip.AddrPort, rep replier, k tupleKey, key []byte) bool {
	m := &g.msg
	if fam, err := m.Get(stun.AttrRequestedAddressFamily); err == nil {
		if len(fam) != 4 {
			g.respond(set, from, rep, stun.CodeBadRequest, key)
			return false
		}
		own := byte(familyIPv4)
		if a := g.s.allocs.lookup(k); a != nil && a.relayAddr.Addr().Is6() {
			own = familyIPv6
		}
		if fam[0] != own {
			g.respond(set, from, rep, stun.CodePeerAddrFamilyMismatch, key)
			return false
		}
	}
	g.capLifetime(set, b, key)
	if lt, err := m.Get(stun.AttrLifetime); err == nil && len(lt) == 4 && binary.BigEndian.Uint32(lt) == 0 {
		g.s.allocs.markEnding(k, endReleased)
	}
	return true
}
