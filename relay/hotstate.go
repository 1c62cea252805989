package relay

import (
	"net/netip"
	"slices"
)

// hotState is what the per-packet path needs of one allocation: its permissions and
// channel bindings. It is immutable; pion's events replace it whole (copy on write),
// so a packet reads it with one atomic load and no lock.
//
// Most allocations hold one or two permissions and channels (a call to one peer), so
// they are short slices, scanned; past smallHot entries maps index them as well.
type hotState struct {
	perms    []netip.Addr
	channels []channelBinding

	permIdx map[netip.Addr]struct{} // nil up to smallHot permissions
	numIdx  map[uint16]int          // index into channels; nil up to smallHot channels
	peerIdx map[netip.AddrPort]int
}

type channelBinding struct {
	peer netip.AddrPort
	num  uint16
}

// smallHot is the size up to which a scan is cheaper than a map lookup.
const smallHot = 8

var emptyHot = &hotState{}

// permitted reports whether there is a permission for a peer IP.
func (h *hotState) permitted(ip netip.Addr) bool {
	if h.permIdx != nil {
		_, ok := h.permIdx[ip]
		return ok
	}
	for _, p := range h.perms {
		if p == ip {
			return true
		}
	}
	return false
}

// peerOf returns the peer bound to channel number n.
func (h *hotState) peerOf(n uint16) (netip.AddrPort, bool) {
	if h.numIdx != nil {
		i, ok := h.numIdx[n]
		if !ok {
			return netip.AddrPort{}, false
		}
		return h.channels[i].peer, true
	}
	for _, c := range h.channels {
		if c.num == n {
			return c.peer, true
		}
	}
	return netip.AddrPort{}, false
}

// channelOf returns the channel number bound to a peer.
func (h *hotState) channelOf(peer netip.AddrPort) (uint16, bool) {
	if h.peerIdx != nil {
		i, ok := h.peerIdx[peer]
		if !ok {
			return 0, false
		}
		return h.channels[i].num, true
	}
	for _, c := range h.channels {
		if c.peer == peer {
			return c.num, true
		}
	}
	return 0, false
}

func (h *hotState) clone() *hotState {
	return &hotState{perms: slices.Clone(h.perms), channels: slices.Clone(h.channels)}
}

// addPerm adds a permission; false if it was there.
func (h *hotState) addPerm(ip netip.Addr) bool {
	if h.permitted(ip) {
		return false
	}
	h.perms = append(h.perms, ip)
	return true
}

// deletePerm removes a permission; false if there was none.
func (h *hotState) deletePerm(ip netip.Addr) bool {
	i := slices.Index(h.perms, ip)
	if i < 0 {
		return false
	}
	h.perms = slices.Delete(h.perms, i, i+1)
	return true
}

// bind binds (or rebinds) channel n to peer; false for a rebind.
func (h *hotState) bind(n uint16, peer netip.AddrPort) bool {
	for i := range h.channels {
		if h.channels[i].num == n {
			h.channels[i].peer = peer
			return false
		}
	}
	h.channels = append(h.channels, channelBinding{peer: peer, num: n})
	return true
}

// unbind removes channel n; false if it was not bound.
func (h *hotState) unbind(n uint16) bool {
	i := slices.IndexFunc(h.channels, func(c channelBinding) bool { return c.num == n })
	if i < 0 {
		return false
	}
	h.channels = slices.Delete(h.channels, i, i+1)
	return true
}

// index builds the maps a large state is looked up through (after an edit).
func (h *hotState) index() {
	h.permIdx, h.numIdx, h.peerIdx = nil, nil, nil
	if len(h.perms) > smallHot {
		h.permIdx = make(map[netip.Addr]struct{}, len(h.perms))
		for _, p := range h.perms {
			h.permIdx[p] = struct{}{}
		}
	}
	if len(h.channels) > smallHot {
		h.numIdx = make(map[uint16]int, len(h.channels))
		h.peerIdx = make(map[netip.AddrPort]int, len(h.channels))
		for i, c := range h.channels {
			h.numIdx[c.num] = i
			h.peerIdx[c.peer] = i
		}
	}
}

// edit applies f to a copy of the allocation's hot state and publishes it if f reports
// a change; then then (if not nil) runs, still under the allocation's lock, so that the
// kernel's maps change in the order the hot state does. Writers are serialised; readers
// never wait.
func (a *allocation) edit(f func(h *hotState) bool, then func(*allocation)) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hot.Load().clone()
	if !f(h) {
		return false
	}
	h.index()
	a.hot.Store(h)
	if then != nil {
		then(a)
	}
	return true
}
