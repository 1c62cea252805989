package relay

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"

	"github.com/relayproject/relay/internal/offload"
	"github.com/relayproject/relay/metrics"
)

// tupleKey identifies an allocation the way pion does: the client's address and the
// server address it talks to, per transport family (UDP, or a TCP/TLS connection).
type tupleKey struct {
	client netip.AddrPort
	local  netip.AddrPort
	stream bool
}

func keyOf(client, local net.Addr) tupleKey {
	k := tupleKey{client: addrPortOf(client), local: addrPortOf(local)}
	_, k.stream = client.(*net.TCPAddr)
	return k
}

// addrPortOf converts the net.Addr values pion hands around, unmapping IPv4-in-IPv6.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// allocation is relay's view of one pion allocation, kept in step by pion's events.
type allocation struct {
	id        string // random, for the operator (admin API, allocation log)
	transport string
	userID    string
	client    netip.AddrPort
	relayAddr netip.AddrPort // as advertised
	created   time.Time
	username  string     // the credentials it was made with, which keep working for it
	key       []byte     // (see ownKey)
	conn      *relayConn // its relay socket, for the per-allocation counters
	ending    string     // why it is going away, when relay knows (guarded by the table's mu)

	out replier // the client's connection: the fast path sends ChannelData through it

	// Bandwidth caps, each way: the allocation's own and its user's (shared by all the
	// user's allocations). nil means no cap.
	upBPS, downBPS         *bitRate
	userUpBPS, userDownBPS *bitRate

	// The user's bytes today against its budget (control.go), shared by its allocations;
	// nil without a Control.
	usage *Usage

	expires atomic.Int64 // unix nanoseconds when its lifetime runs out, as last granted

	// The current rate each way in bits per second (sampleRates), and the sample it
	// was worked out from.
	rateUp, rateDown atomic.Uint64
	rateMu           sync.Mutex
	rateAt           time.Time
	rateC2P, rateP2C uint64

	mu   sync.Mutex // serialises edits of hot, and with them of the kernel's maps
	hot  atomic.Pointer[hotState]
	dead atomic.Bool // set when pion deletes it; the fast path's caches drop it then

	// The kernel data path (offload.go): the allocation's id in its maps, 0 while the
	// allocation stays in relay's process, and the channels written there (guarded by mu).
	kid    uint32
	klocal netip.AddrPort // the listener address its client talks to
	kchans map[uint16]offload.Channel
	// What the kernel relayed for it: on channels that have left the maps (kgone), and
	// on those in them as of the last sweep (klive); kcounted is how much of it has
	// gone into usage.
	kgone    offload.Counts
	klive    map[uint16]offload.Counts
	kcounted uint64
}

// Why an allocation ended, in the allocation log.
const (
	endExpired   = "expired"           // its lifetime ran out without a Refresh
	endReleased  = "released"          // the client sent Refresh with lifetime 0
	endConnClose = "connection_closed" // the client's TCP/TLS connection ended
	endShutdown  = "shutdown"          // relay stopped
)

// userRates are a user's bandwidth caps, shared by its allocations.
type userRates struct {
	up, down *bitRate
	refs     int
}

// admit takes n bytes from the caps of one direction; false means drop.
func admit(n int, own, user *bitRate) bool {
	if own == nil && user == nil {
		return true
	}
	now := offload.Now()
	return own.take(n, now) && user.take(n, now)
}

// reservation holds a quota slot between an accepted Allocate and pion's verdict on it.
type reservation struct {
	userID    string
	transport string
	username  string // the credentials the allocation was made with
	key       []byte
	out       replier
}

// allocations tracks allocations, per-user counts and in-flight reservations. One mutex:
// everything here changes at control-plane rates, never per packet.
type allocations struct {
	m       *metrics.Metrics
	log     *slog.Logger
	ports   *relayPorts
	ports6  *relayPorts // IPv6 relay sockets; nil without relay_ip6
	ctl     Control     // nil: no operator control (control.go)
	mu      sync.Mutex
	byKey   map[tupleKey]*allocation
	perUser map[string]int // allocations plus reservations, per user id
	userBPS map[string]*userRates
	pending map[tupleKey]reservation
	ending  int         // allocations out of byKey whose end is still being logged
	kernel  *kernelPath // nil unless the kernel data path is on (offload.go)
}

func newAllocations(m *metrics.Metrics, log *slog.Logger) *allocations {
	return &allocations{
		m:       m,
		log:     log,
		byKey:   make(map[tupleKey]*allocation),
		perUser: make(map[string]int),
		userBPS: make(map[string]*userRates),
		pending: make(map[tupleKey]reservation),
	}
}

func (t *allocations) exists(k tupleKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.byKey[k]
	return ok
}

// total counts allocations plus in-flight reservations.
func (t *allocations) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey) + len(t.pending)
}

// reserve takes a quota slot for userID, or says which limit refused it.
func (t *allocations) reserve(k tupleKey, r reservation, perUser, total int) (refusal string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.pending[k]; dup {
		return "" // a retransmission of an Allocate still in flight: already reserved
	}
	switch {
	case t.perUser[r.userID] >= perUser:
		return metrics.AllocQuota
	case len(t.byKey)+len(t.pending) >= total:
		return metrics.AllocCapacity
	}
	t.perUser[r.userID]++
	t.pending[k] = r
	return ""
}

// settle releases a reservation that pion did not turn into an allocation (it answered
// the Allocate with an error, counted as it went out). It runs before the next read on
// the same socket, which is after pion has finished with the request.
func (t *allocations) settle(k tupleKey) {
	t.mu.Lock()
	r, ok := t.pending[k]
	if ok {
		delete(t.pending, k)
		t.releaseUserLocked(r.userID)
	}
	t.mu.Unlock()
}

func (t *allocations) releaseUserLocked(userID string) {
	if t.perUser[userID] <= 1 {
		delete(t.perUser, userID)
	} else {
		t.perUser[userID]--
	}
}

// userIDOf is the fallback when an allocation appears without a reservation.
func userIDOf(username string) string {
	if _, id, ok := strings.Cut(username, ":"); ok {
		return id
	}
	return username
}

// eventHandler returns the pion callbacks that keep this table in step.
func (t *allocations) eventHandler(transportOf func(client net.Addr) string) turn.EventHandler {
	return turn.EventHandler{
		OnAllocationCreated: func(src, dst net.Addr, _, username, _ string, relayAddr net.Addr, _ int) {
			k := keyOf(src, dst)
			ra := addrPortOf(relayAddr)
			now := time.Now()
			a := &allocation{id: newAllocationID(), client: k.client, relayAddr: ra, created: now, rateAt: now}
			a.hot.Store(emptyHot)
			// pion's default until the success response says what it granted (setExpiry).
			a.expires.Store(now.Add(pionDefaultLifetime).UnixNano())
			if ports := t.portsOf(ra.Addr()); ports != nil {
				a.conn = ports.lookup(ra.Port())
			}
			t.mu.Lock()
			r, ok := t.pending[k]
			if ok {
				delete(t.pending, k)
			} else {
				r = reservation{userID: userIDOf(username), transport: transportOf(src)}
				t.perUser[r.userID]++
			}
			a.transport, a.userID, a.username, a.key, a.out = r.transport, r.userID, r.username, r.key, r.out
			if t.ctl != nil {
				a.usage = t.ctl.AcquireUsage(a.userID)
			}
			if t.ports != nil {
				lim := t.ports.set.Load().limits
				a.upBPS, a.downBPS = t.kernel.newRate(lim.MaxBPS), t.kernel.newRate(lim.MaxBPS)
				if lim.UserMaxBPS > 0 {
					u := t.userBPS[a.userID]
					if u == nil {
						u = &userRates{up: t.kernel.newRate(lim.UserMaxBPS), down: t.kernel.newRate(lim.UserMaxBPS)}
						t.userBPS[a.userID] = u
					}
					u.refs++
					a.userUpBPS, a.userDownBPS = u.up, u.down
				}
			}
			t.kernel.adopt(a, k)
			t.byKey[k] = a
			t.mu.Unlock()
			if a.conn != nil {
				a.conn.alloc.Store(a)
			}
			t.m.AllocationsActive.WithLabelValues(r.transport).Inc()
			t.m.AllocationsTotal.WithLabelValues(metrics.AllocSuccess).Inc()
			if t.ctl != nil {
				t.ctl.AllocationCreated(a.info(now, relayCounts{})) // nothing relayed yet
			}
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) {
			t.remove(keyOf(src, dst))
		},
		OnPermissionCreated: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
			ip, ok := netip.AddrFromSlice(peer)
			if ok && t.edit(keyOf(src, dst), func(h *hotState) bool { return h.addPerm(ip.Unmap()) }, func(a *allocation) { t.kernel.permit(a, ip.Unmap()) }) {
				t.m.PermissionsActive.Inc()
			}
		},
		OnPermissionDeleted: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
			ip, ok := netip.AddrFromSlice(peer)
			// pion may report one permission twice (expiry racing Close): count once.
			if ok && t.edit(keyOf(src, dst), func(h *hotState) bool { return h.deletePerm(ip.Unmap()) }, func(a *allocation) { t.kernel.unpermit(a, ip.Unmap()) }) {
				t.m.PermissionsActive.Dec()
			}
		},
		OnChannelCreated: func(src, dst net.Addr, _, _, _ string, _, peer net.Addr, number uint16) {
			p := addrPortOf(peer)
			if t.edit(keyOf(src, dst), func(h *hotState) bool { return h.bind(number, p) }, func(a *allocation) { t.kernel.addChannel(a, number, p) }) {
				t.m.ChannelsActive.Inc()
			}
		},
		OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, _, _ net.Addr, number uint16) {
			if t.edit(keyOf(src, dst), func(h *hotState) bool { return h.unbind(number) }, func(a *allocation) { t.kernel.dropChannel(a, number) }) {
				t.m.ChannelsActive.Dec()
			}
		},
	}
}

// portsOf is the relay port set of relayed addresses of ip's family.
func (t *allocations) portsOf(ip netip.Addr) *relayPorts {
	if ip.Is6() {
		return t.ports6
	}
	return t.ports
}

// remove takes the allocation at k out of the table and accounts for its end, once: pion
// may report a deletion twice, and endAll may have got there first.
func (t *allocations) remove(k tupleKey) {
	t.mu.Lock()
	a, ok := t.byKey[k]
	if ok {
		delete(t.byKey, k)
		t.ending++
		t.releaseUserLocked(a.userID)
	}
	t.mu.Unlock()
	if ok {
		// Out of the kernel's maps first (its counts into the allocation's), then its
		// buckets are free.
		t.kernel.forget(a)
		t.kernel.freeRate(a.upBPS)
		t.kernel.freeRate(a.downBPS)
		t.mu.Lock()
		if u := t.userBPS[a.userID]; u != nil && a.userUpBPS != nil {
			if u.refs--; u.refs <= 0 {
				delete(t.userBPS, a.userID)
				t.kernel.freeRate(u.up)
				t.kernel.freeRate(u.down)
			}
		}
		t.mu.Unlock()
		t.ended(a)
		t.mu.Lock()
		t.ending--
		t.mu.Unlock()
	}
}

// settled reports whether every allocation has ended and been logged.
func (t *allocations) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey) == 0 && t.ending == 0
}

// endAll ends every allocation still in the table, for those pion never reported deleted
// when the server closed.
func (t *allocations) endAll() {
	t.mu.Lock()
	keys := make([]tupleKey, 0, len(t.byKey))
	for k := range t.byKey {
		keys = append(keys, k)
	}
	t.mu.Unlock()
	for _, k := range keys {
		t.remove(k)
	}
}

// edit changes the hot state of the allocation at k, if it exists, and then calls then
// (see allocation.edit).
func (t *allocations) edit(k tupleKey, f func(*hotState) bool, then func(*allocation)) bool {
	t.mu.Lock()
	a := t.byKey[k]
	t.mu.Unlock()
	return a != nil && a.edit(f, then)
}

// all lists the allocations now.
func (t *allocations) all() []*allocation {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*allocation, 0, len(t.byKey))
	for _, a := range t.byKey {
		out = append(out, a)
	}
	return out
}

// lookup returns the live allocation at k, or nil.
func (t *allocations) lookup(k tupleKey) *allocation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byKey[k]
}

// ended accounts for an allocation pion deleted and writes the allocation log line.
func (t *allocations) ended(a *allocation) {
	a.dead.Store(true)
	if sc, ok := a.out.(*streamConn); ok {
		sc.allocationEnded()
	}
	a.mu.Lock()
	h := a.hot.Swap(emptyHot)
	a.mu.Unlock()
	perms, channels := len(h.perms), len(h.channels)
	t.mu.Lock()
	reason := a.ending
	t.mu.Unlock()
	if reason == "" {
		reason = endExpired
	}
	lived := time.Since(a.created)
	t.m.AllocationsActive.WithLabelValues(a.transport).Dec()
	t.m.PermissionsActive.Sub(float64(perms))
	t.m.ChannelsActive.Sub(float64(channels))
	t.m.AllocationDuration.WithLabelValues(a.transport).Observe(lived.Seconds())
	c := t.kernel.relayed(a)
	e := AllocationEnd{ID: a.id, User: a.userID, Client: a.client.String(), Transport: a.transport,
		Relay: a.relayAddr.String(), Duration: lived.Round(time.Millisecond).String(),
		BytesClientToPeer: c.c2pBytes, PacketsClientToPeer: c.c2pPackets,
		BytesPeerToClient: c.p2cBytes, PacketsPeerToClient: c.p2cPackets, DroppedBudget: c.budgetDropped, Reason: reason}
	attrs := []any{"id", e.ID, "user", e.User, "client", e.Client, "transport", e.Transport,
		"relay", e.Relay, "duration", e.Duration,
		"bytes_client_to_peer", e.BytesClientToPeer, "packets_client_to_peer", e.PacketsClientToPeer,
		"bytes_peer_to_client", e.BytesPeerToClient, "packets_peer_to_client", e.PacketsPeerToClient}
	if e.DroppedBudget > 0 {
		// It outlived its user's byte budget: say why it relayed no more.
		attrs = append(attrs, "dropped_budget", e.DroppedBudget)
	}
	t.log.Info("allocation ended", append(attrs, "reason", reason)...)
	if t.ctl != nil {
		if a.usage != nil {
			t.ctl.ReleaseUsage(a.userID)
		}
		t.ctl.AllocationEnded(e)
	}
}

// setExpiry records the lifetime pion granted the allocation at k (read off its success
// response to Allocate or Refresh).
func (t *allocations) setExpiry(k tupleKey, secs uint32) {
	if a := t.lookup(k); a != nil {
		a.expires.Store(time.Now().Add(time.Duration(secs) * time.Second).UnixNano())
	}
}

// ownKey returns the key the allocation at k was created with, if username is the one
// it was created with. Requests on an existing allocation (Refresh, CreatePermission,
// ChannelBind) may use it after those credentials expired or their secret was rotated
// out: a call in progress must not drop because its credentials aged; new allocations
// still need valid ones.
func (t *allocations) ownKey(k tupleKey, username string) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.byKey[k]; ok && a.username == username {
		return a.key
	}
	return nil
}

// markEnding records why the allocation at k is about to end, for the allocation log.
func (t *allocations) markEnding(k tupleKey, reason string) {
	t.mu.Lock()
	if a, ok := t.byKey[k]; ok && a.ending == "" {
		a.ending = reason
	}
	t.mu.Unlock()
}

// markAll records reason for every allocation (shutdown).
func (t *allocations) markAll(reason string) {
	t.mu.Lock()
	for _, a := range t.byKey {
		if a.ending == "" {
			a.ending = reason
		}
	}
	t.mu.Unlock()
}

// count is the number of allocations now.
func (t *allocations) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}
