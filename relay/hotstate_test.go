package relay

import (
	"net/netip"
	"testing"
)

// The hot state answers the same whether it is scanned (small) or indexed (large).
func TestHotStateSmallAndLarge(t *testing.T) {
	for _, n := range []int{1, smallHot, smallHot + 1, 40} {
		h := emptyHot.clone()
		peer := func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(10000+i))
		}
		for i := 0; i < n; i++ {
			if !h.addPerm(peer(i).Addr()) || !h.bind(uint16(0x4000+i), peer(i)) {
				t.Fatalf("n=%d: entry %d not new", n, i)
			}
		}
		if h.addPerm(peer(0).Addr()) || h.bind(0x4000, peer(0)) {
			t.Fatalf("n=%d: a duplicate counted as new", n)
		}
		h.index()
		if (h.permIdx != nil) != (n > smallHot) || (h.numIdx != nil) != (n > smallHot) {
			t.Fatalf("n=%d: indexed = %v, want %v", n, h.permIdx != nil, n > smallHot)
		}
		for i := 0; i < n; i++ {
			if !h.permitted(peer(i).Addr()) {
				t.Fatalf("n=%d: no permission %d", n, i)
			}
			if p, ok := h.peerOf(uint16(0x4000 + i)); !ok || p != peer(i) {
				t.Fatalf("n=%d: channel %d → %v %v", n, i, p, ok)
			}
			if c, ok := h.channelOf(peer(i)); !ok || c != uint16(0x4000+i) {
				t.Fatalf("n=%d: peer %d → %#x %v", n, i, c, ok)
			}
		}
		if h.permitted(peer(n).Addr()) {
			t.Fatalf("n=%d: permitted a peer never added", n)
		}
		if _, ok := h.peerOf(uint16(0x4000 + n)); ok {
			t.Fatalf("n=%d: a channel never bound", n)
		}
		// Remove the first; the rest keep answering (indexes rebuilt by edit).
		c := h.clone()
		if !c.deletePerm(peer(0).Addr()) || !c.unbind(0x4000) || c.deletePerm(peer(0).Addr()) || c.unbind(0x4000) {
			t.Fatalf("n=%d: delete reported wrongly", n)
		}
		c.index()
		if c.permitted(peer(0).Addr()) {
			t.Fatalf("n=%d: permission survived delete", n)
		}
		if _, ok := c.channelOf(peer(0)); ok {
			t.Fatalf("n=%d: channel survived unbind", n)
		}
		if n > 1 {
			if p, ok := c.peerOf(uint16(0x4000 + n - 1)); !ok || p != peer(n-1) {
				t.Fatalf("n=%d: last channel lost after unbind: %v %v", n, p, ok)
			}
		}
		if !h.permitted(peer(0).Addr()) {
			t.Fatalf("n=%d: editing a clone changed the original", n)
		}
	}
}
