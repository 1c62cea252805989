package relay

import "net/netip"

// hotState is what the per-packet path needs of one allocation: its permissions and
// channel bindings. It is immutable; pion's events replace it whole (copy on write),
// so a packet reads it with one atomic load and no lock.
type hotState struct {
	perms  map[netip.Addr]struct{}
	byNum  map[uint16]netip.AddrPort
	byPeer map[netip.AddrPort]uint16
}

var emptyHot = &hotState{}

func (h *hotState) clone() *hotState {
	c := &hotState{
		perms:  make(map[netip.Addr]struct{}, len(h.perms)+1),
		byNum:  make(map[uint16]netip.AddrPort, len(h.byNum)+1),
		byPeer: make(map[netip.AddrPort]uint16, len(h.byPeer)+1),
	}
	for k, v := range h.perms {
		c.perms[k] = v
	}
	for k, v := range h.byNum {
		c.byNum[k] = v
	}
	for k, v := range h.byPeer {
		c.byPeer[k] = v
	}
	return c
}

// edit applies f to a copy of the allocation's hot state and publishes it if f reports
// a change. Writers are serialised; readers never wait.
func (a *allocation) edit(f func(h *hotState) bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.hot.Load().clone()
	if !f(h) {
		return false
	}
	a.hot.Store(h)
	return true
}

// permitted reports whether the allocation has a permission for a peer IP.
func (a *allocation) permitted(ip netip.Addr) bool {
	_, ok := a.hot.Load().perms[ip]
	return ok
}
