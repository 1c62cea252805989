package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/offload"
	"github.com/relayproject/relay/metrics"
)

// The kernel data path (turn.offload, internal/offload) relays ChannelData of UDP
// clients inside the kernel. pion stays the control plane, and relay's view of it (the
// allocation table and each allocation's hot state) stays the one source: kernelPath
// mirrors into the program's maps exactly what the hot state holds, at the points where
// it changes (allocations.go's event handlers, under the allocation's lock), for
// allocations it adopts. A datagram the kernel does not relay reaches relay's sockets
// and the userspace fast path as before, so either path may carry any datagram.
//
//   - An allocation is adopted when its client is IPv4 over UDP and its bandwidth caps
//     (max_bps, user_max_bps) live in the kernel's bucket memory: then both paths take
//     from the same buckets and a cap holds whichever way a datagram goes.
//   - A channel enters the maps only after the peer policy passes its peer (CheckAddr,
//     as the fast path checks every datagram), and a reload checks every channel again
//     (recheck): a denied peer's channel leaves the maps and its datagrams are dropped in
//     userspace. Peers on relay's own public address behind a 1:1 NAT stay in userspace,
//     which delivers them locally.
//   - Permissions are mirrored as they come and go: the program drops a channel's data
//     once its permission has expired, as the fast path does.
//   - When an allocation ends, everything of it leaves the maps before its log line is
//     written and its buckets are freed; what the kernel relayed on a channel is added
//     to the allocation's counts when the channel leaves.
//   - The program's totals are added to relay_turn_relayed_*, relay_turn_dropped_total
//     and relay_turn_offloaded_packets_total before every scrape, every syncEvery, and as
//     allocations end.
type kernelPath struct {
	d              *offload.Datapath
	ctr            *counters
	set            *atomic.Pointer[settings]
	bind           netip.Addr // relay_ip
	advertise      netip.Addr // public_ip, or relay_ip
	offC2P, offP2C prometheus.Counter

	ids atomic.Uint32 // allocation ids; 0 is never handed out

	amu  sync.Mutex
	byID map[uint32]*allocation // the allocations in the maps, by id (for sweep)

	mu     sync.Mutex // sync's
	last   offload.Stats
	closed bool

	swmu sync.Mutex // serialises sweeps

	stop chan struct{}
	done chan struct{}
}

// ErrOffloadRequired is what Start returns, wrapped with the reason, when turn.offload =
// "required" and the kernel data path cannot run.
var ErrOffloadRequired = errors.New(`turn.offload = "required"`)

// startOffload opens the kernel data path as turn.offload asks, once the UDP listeners
// are bound, and logs one line saying whether it is on and why not.
func (s *Server) startOffload() error {
	mode := s.cfg.TURN.Offload
	if mode == config.OffloadOff {
		s.offloadOff = `turn.offload = "off"`
		s.log.Info("turn offload off", "reason", s.offloadOff)
		return nil
	}
	var listeners []netip.AddrPort
	for _, a := range s.addrs[metrics.TransportUDP] {
		listeners = append(listeners, addrPortOf(a))
	}
	lim := s.cfg.Limits
	// Most calls bind one channel and one permission; a full map leaves the rest in
	// userspace, so the maps hold a few per allocation, not the per-allocation caps.
	entries := min(4*lim.TotalAllocations, 1<<20)
	d, err := offload.Open(offload.Config{
		Listeners:   listeners,
		RelayIP:     s.relayBind,
		RelayPorts:  [2]uint16{s.cfg.TURN.RelayPorts.Min, s.cfg.TURN.RelayPorts.Max},
		Interfaces:  s.cfg.TURN.OffloadInterfaces,
		Channels:    entries,
		Permissions: entries,
		Buckets:     4 * lim.TotalAllocations, // each way, per allocation and per user
	})
	if err != nil {
		if mode == config.OffloadRequired {
			return fmt.Errorf(`%w, but the kernel data path cannot run: %w (set turn.offload = "auto" to run without it)`, ErrOffloadRequired, err)
		}
		s.offloadOff = err.Error()
		s.log.Warn("turn offload off", "reason", s.offloadOff)
		return nil
	}
	k := &kernelPath{
		d: d, ctr: s.counters, set: &s.settings, bind: s.relayBind, advertise: s.relayAdvertise,
		offC2P: s.metrics.OffloadedPackets.WithLabelValues(metrics.DirectionClientToPeer),
		offP2C: s.metrics.OffloadedPackets.WithLabelValues(metrics.DirectionPeerToClient),
		stop:   make(chan struct{}), done: make(chan struct{}),
		byID: map[uint32]*allocation{},
	}
	s.kernel, s.allocs.kernel = k, k
	s.metrics.OffloadActive.Set(1)
	s.metrics.OnGather(k.sync)
	go k.loop()
	s.log.Info("turn offload on", "interfaces", strings.Join(d.Interfaces(), ","), "program", d.ProgramID())
	return nil
}

// syncEvery is how often the kernel's totals are brought into relay's counters besides
// scrapes and allocation ends: a few map reads, so often enough that a test or a
// dashboard polling the counters directly never waits long.
const syncEvery = 100 * time.Millisecond

// sweepEvery is how often every channel's counts are read (sweep).
const sweepEvery = time.Second

// loop brings the kernel's totals into relay's counters every syncEvery, and its
// per-channel counts into the allocations every sweepEvery.
func (k *kernelPath) loop() {
	defer close(k.done)
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-k.stop:
			return
		case now := <-t.C:
			k.sync()
			if now.Sub(lastSweep) >= sweepEvery {
				k.sweep()
				lastSweep = now
			}
		}
	}
}

// close detaches the program, after a last sync. Every allocation has ended by then.
func (k *kernelPath) close(m *metrics.Metrics) error {
	if k == nil {
		return nil
	}
	close(k.stop)
	<-k.done
	k.sync()
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	m.OffloadActive.Set(0)
	return k.d.Close()
}

// sync adds what the kernel counted since the last sync to relay's counters.
func (k *kernelPath) sync() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	st, err := k.d.Stats()
	if err != nil {
		return
	}
	l := k.last
	k.ctr.toPeer.addBatch(int(st.ToPeerBytes-l.ToPeerBytes), int(st.ToPeerPackets-l.ToPeerPackets))
	k.ctr.toClient.addBatch(int(st.ToClientBytes-l.ToClientBytes), int(st.ToClientPackets-l.ToClientPackets))
	k.offC2P.Add(float64(st.ToPeerPackets - l.ToPeerPackets))
	k.offP2C.Add(float64(st.ToClientPackets - l.ToClientPackets))
	k.ctr.dropped[dropNoPermissionIdx].Add(float64(st.DroppedNoPermission - l.DroppedNoPermission))
	k.ctr.dropped[dropBandwidthIdx].Add(float64(st.DroppedBandwidth - l.DroppedBandwidth))
	k.last = st
}

// newRate is a bandwidth cap in the kernel's bucket memory when the kernel path is on
// (and has a bucket left), else in this process.
func (k *kernelPath) newRate(bps int64) *bitRate {
	if bps <= 0 {
		return nil
	}
	if k != nil {
		if idx, tat, ok := k.d.NewBucket(uint64(bps)); ok {
			return &bitRate{tat: tat, bps: uint64(bps), kernel: idx}
		}
	}
	return newBitRate(bps)
}

// freeRate gives a cap's kernel bucket back, once nothing in the maps refers to it.
func (k *kernelPath) freeRate(b *bitRate) {
	if k != nil && b != nil && b.kernel != 0 {
		k.d.FreeBucket(b.kernel)
	}
}

// inKernel reports whether a cap is nil or kept in the kernel's memory.
func inKernel(b *bitRate) bool { return b == nil || b.kernel != 0 }

// adopt gives a new allocation an id in the kernel's maps if the kernel can relay for
// it: a UDP client over IPv4 with an IPv4 relay address, every cap in the kernel's
// memory, and no byte budget (the program cannot check one: relay's path does, per
// datagram).
func (k *kernelPath) adopt(a *allocation, key tupleKey) {
	if k == nil || a.conn == nil || key.stream || !a.client.Addr().Is4() || a.conn.r.bind != k.bind {
		return
	}
	if a.usage != nil && a.usage.Limit() > 0 {
		return
	}
	if l := key.local.Addr().Unmap(); !l.Is4() && !l.IsUnspecified() {
		return
	}
	if _, udp := a.out.(*packetConn); !udp {
		return
	}
	if !inKernel(a.upBPS) || !inKernel(a.downBPS) || !inKernel(a.userUpBPS) || !inKernel(a.userDownBPS) {
		return
	}
	id := k.ids.Add(1)
	if id == 0 {
		id = k.ids.Add(1)
	}
	a.kid, a.klocal = id, key.local
	k.amu.Lock()
	k.byID[id] = a
	k.amu.Unlock()
}

// permit and unpermit mirror a permission (a.mu held). The kernel must never hold a
// permission relay has not, nor lack one relay has (it would drop what relay relays):
// when the map refuses (full), the allocation leaves the kernel for good.
func (k *kernelPath) permit(a *allocation, ip netip.Addr) {
	if k != nil && a.kid != 0 && k.d.SetPermission(a.kid, ip) != nil {
		k.release(a)
	}
}

func (k *kernelPath) unpermit(a *allocation, ip netip.Addr) {
	if k != nil && a.kid != 0 && k.d.DeletePermission(a.kid, ip) != nil {
		k.release(a)
	}
}

// release takes everything of a out of the maps; it stays in relay's process from now
// on (a.mu held).
func (k *kernelPath) release(a *allocation) {
	for n := range a.kchans {
		k.dropChannel(a, n)
	}
	for _, ip := range a.hot.Load().perms {
		_ = k.d.DeletePermission(a.kid, ip)
	}
	k.amu.Lock()
	delete(k.byID, a.kid)
	k.amu.Unlock()
	a.kid = 0
	k.settle(a)
}

// channel is channel n to peer as the kernel sees it, and whether the kernel may relay
// it under the peer policy now.
func (k *kernelPath) channel(a *allocation, n uint16, peer netip.AddrPort) (offload.Channel, bool) {
	c := offload.Channel{
		Alloc: a.kid, Client: a.client, Local: a.klocal, Relay: netip.AddrPortFrom(a.conn.r.bind, a.conn.port),
		Peer: peer, Number: n,
		Up: bucketOf(a.upBPS), UserUp: bucketOf(a.userUpBPS), Down: bucketOf(a.downBPS), UserDown: bucketOf(a.userDownBPS),
	}
	p := peer.Addr().Unmap()
	if !p.Is4() || k.set.Load().policy.CheckAddr(peer) != DenyNone {
		return c, false
	}
	if k.advertise != k.bind && p == k.advertise {
		return c, false // our public address behind a 1:1 NAT: relayConn delivers it locally
	}
	return c, true
}

func bucketOf(b *bitRate) uint32 {
	if b == nil {
		return 0
	}
	return b.kernel
}

// addChannel writes a new channel into the maps if the kernel may relay it (a.mu held).
func (k *kernelPath) addChannel(a *allocation, n uint16, peer netip.AddrPort) {
	if k == nil || a.kid == 0 {
		return
	}
	c, ok := k.channel(a, n, peer)
	if !ok {
		return
	}
	if err := k.d.AddChannel(c); err != nil {
		return // not eligible (no route the program can take) or a full map: userspace relays it
	}
	if a.kchans == nil {
		a.kchans = map[uint16]offload.Channel{}
	}
	a.kchans[n] = c
}

// dropChannel takes channel n out of the maps, adding what the kernel relayed on it to the
// allocation's counts (a.mu held).
func (k *kernelPath) dropChannel(a *allocation, n uint16) {
	if k == nil {
		return
	}
	c, ok := a.kchans[n]
	if !ok {
		return
	}
	delete(a.kchans, n)
	got, _ := k.d.RemoveChannel(c)
	a.kgone.Add(got)
	delete(a.klive, n) // counted in kgone now, with what came since the last sweep
}

// settle adds to the user's usage what the kernel relayed for a since the last time
// (a.mu held). Channels that left count what the kernel had when they left, live ones
// what the last sweep saw: never more than once, never less in the end.
func (k *kernelPath) settle(a *allocation) {
	total := a.kgone.ToPeerBytes + a.kgone.ToClientBytes
	for _, c := range a.klive {
		total += c.ToPeerBytes + c.ToClientBytes
	}
	if a.usage != nil && total > a.kcounted {
		a.usage.count(int(total - a.kcounted))
	}
	a.kcounted = max(a.kcounted, total)
}

// sweep reads every channel's counts (a few batched map reads) into its allocation,
// adds the new bytes to the users' usage, and lets go of allocations whose user got a
// byte budget since they were adopted: relay's path checks it from then on.
func (k *kernelPath) sweep() {
	if k == nil {
		return
	}
	k.swmu.Lock()
	defer k.swmu.Unlock()
	type key struct {
		id uint32
		n  uint16
	}
	live := map[key]offload.Counts{}
	if k.d.Sweep(func(id uint32, n uint16, c offload.Counts) {
		x := live[key{id, n}]
		x.Add(c)
		live[key{id, n}] = x
	}) != nil {
		return
	}
	k.amu.Lock()
	list := make([]*allocation, 0, len(k.byID))
	for _, a := range k.byID {
		list = append(list, a)
	}
	k.amu.Unlock()
	for _, a := range list {
		a.mu.Lock()
		if a.kid != 0 {
			if a.klive == nil {
				a.klive = map[uint16]offload.Counts{}
			}
			// Only channels still in the maps: one that left since the read is in kgone.
			for n := range a.kchans {
				if c, ok := live[key{a.kid, n}]; ok {
					a.klive[n] = c
				}
			}
			k.settle(a)
			if a.usage != nil && a.usage.Limit() > 0 {
				k.release(a)
			}
		}
		a.mu.Unlock()
	}
}

// forget takes everything of an ended allocation out of the maps and brings the totals
// up to date, before its log line and its metrics are written.
func (k *kernelPath) forget(a *allocation) {
	if k == nil {
		return
	}
	a.mu.Lock()
	adopted := a.kid != 0
	if adopted {
		k.release(a)
	}
	a.mu.Unlock()
	if adopted {
		k.sync()
	}
}

// recheck applies a new peer policy to every channel: those it now denies leave the
// maps (their datagrams meet the policy in userspace), those it allows again return.
func (k *kernelPath) recheck(all []*allocation) {
	if k == nil {
		return
	}
	for _, a := range all {
		a.mu.Lock()
		if a.kid != 0 {
			for _, ch := range a.hot.Load().channels {
				_, in := a.kchans[ch.num]
				_, ok := k.channel(a, ch.num, ch.peer)
				switch {
				case in && !ok:
					k.dropChannel(a, ch.num)
				case !in && ok:
					k.addChannel(a, ch.num, ch.peer)
				}
			}
		}
		a.mu.Unlock()
	}
}

// relayed is what an allocation relayed, both paths: relay's own counts, and the
// kernel's as of its last sweep (exact once the allocation has left the maps).
func (k *kernelPath) relayed(a *allocation) relayCounts {
	var c relayCounts
	if a.conn != nil {
		c = a.conn.counts()
	}
	if k == nil {
		return c
	}
	a.mu.Lock()
	n := a.kgone
	for _, l := range a.klive {
		n.Add(l)
	}
	a.mu.Unlock()
	c.c2pBytes += n.ToPeerBytes
	c.c2pPackets += n.ToPeerPackets
	c.p2cBytes += n.ToClientBytes
	c.p2cPackets += n.ToClientPackets
	return c
}
