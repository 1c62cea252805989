package relay

import (
	"encoding/binary"

	"github.com/pion/stun/v3"
)

// refresh checks an authenticated Refresh: its lifetime is capped, and a lifetime of 0
// (release) is noted for the allocation log.
func (g *gate) refresh(set *settings, b []byte, k tupleKey, key []byte) bool {
	m := &g.msg
	g.capLifetime(set, b, key)
	if lt, err := m.Get(stun.AttrLifetime); err == nil && len(lt) == 4 && binary.BigEndian.Uint32(lt) == 0 {
		g.s.allocs.markEnding(k, endReleased)
	}
	return true
}
