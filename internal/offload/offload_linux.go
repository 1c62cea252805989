//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Datapath is the loaded and attached program with its maps.
type Datapath struct {
	objs    datapathObjects
	links   []link.Link
	ifaces  []string
	ifindex []int  // of ifaces
	progID  uint32 // the kernel's id of the program, kept for Attached after Close
	routes  *routes
	relay   netip.Addr

	bucketMem []byte // the buckets map, shared with the program (mmap)
	bmu       sync.Mutex
	freeB     []uint32
	nextB     uint32
	maxB      uint32

	closeOnce sync.Once
}

// bucketSize is sizeof(struct bucket): tat, bps.
const bucketSize = 16

// Open loads the program for cfg and attaches it. The error says why the kernel data
// path cannot run here, in words an operator can act on.
func Open(cfg Config) (*Datapath, error) {
	if !cfg.RelayIP.Is4() || cfg.RelayIP.IsUnspecified() {
		return nil, fmt.Errorf("the relay address %s is not a concrete IPv4 address", cfg.RelayIP)
	}
	var ports []uint16
	for _, l := range cfg.Listeners {
		if l.Addr().Is6() && !l.Addr().Is4In6() && !l.Addr().IsUnspecified() {
			continue // IPv6 clients stay in userspace
		}
		if !slices.Contains(ports, l.Port()) {
			ports = append(ports, l.Port())
		}
	}
	if len(ports) == 0 {
		return nil, errors.New("no IPv4 UDP listener")
	}
	if len(ports) > MaxListenPorts {
		return nil, fmt.Errorf("%d UDP listener ports, the kernel data path handles at most %d", len(ports), MaxListenPorts)
	}
	ifaces, err := interfaces(cfg)
	if err != nil {
		return nil, err
	}
	if err := capable(); err != nil {
		return nil, err
	}

	spec, err := loadDatapath()
	if err != nil {
		return nil, err
	}
	var lp [MaxListenPorts]uint16
	for i, p := range ports {
		lp[i] = htons(p)
	}
	for name, v := range map[string]any{
		datapathVarRelayIp:     be32(cfg.RelayIP),
		datapathVarRelayMin:    cfg.RelayPorts[0],
		datapathVarRelayMax:    cfg.RelayPorts[1],
		datapathVarListenPorts: lp,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}
	maxB := uint32(max(cfg.Buckets, 1) + 1) // index 0 means "no bucket"
	spec.Maps[datapathMapC2p].MaxEntries = uint32(max(cfg.Channels, 1))
	spec.Maps[datapathMapP2c].MaxEntries = uint32(max(cfg.Channels, 1))
	spec.Maps[datapathMapPerms].MaxEntries = uint32(max(cfg.Permissions, 1))
	spec.Maps[datapathMapBuckets].MaxEntries = maxB

	d := &Datapath{ifaces: ifaces, relay: cfg.RelayIP, maxB: maxB, nextB: 1}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, explain("loading the program", err)
	}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	size := roundPage(int(maxB) * bucketSize)
	d.bucketMem, err = unix.Mmap(d.objs.Buckets.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the bucket memory: %w", err)
	}
	if d.routes, err = newRoutes(); err != nil {
		return nil, err
	}
	for _, name := range ifaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w", name, err)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: d.objs.RelayIngress, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return nil, explain("attaching to "+name+" (tcx ingress)", err)
		}
		d.links = append(d.links, l)
		d.ifindex = append(d.ifindex, ifc.Index)
	}
	if info, err := d.objs.RelayIngress.Info(); err == nil {
		id, _ := info.ID()
		d.progID = uint32(id)
	}
	ok = true
	return d, nil
}

// Capabilities the data path needs: loading the program (CAP_BPF), attaching it
// (CAP_NET_ADMIN), and the pointer reads of a networking program (CAP_PERFMON).
// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as on kernels before 5.8.
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// capable checks the effective capabilities before any bpf(2) call: a service without
// them (relay's packaged unit, whose system call filter also refuses bpf) learns why
// the kernel path is off without trying.
func capable() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading relay's capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []string
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) > 0 {
		return fmt.Errorf("not permitted: relay lacks %s (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)", strings.Join(missing, ", "))
	}
	return nil
}

// explain turns the kernel's refusals into what to do about them.
func explain(what string, err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		// Also EPERM, but a refusal of the program, not of relay's privileges.
		return fmt.Errorf("%s: the kernel's verifier refused the program (Linux 6.6 or later is needed): %v", what, ve)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%s: the kernel lacks a feature the data path needs (Linux 6.6 or later with BTF): %w", what, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: not permitted: relay needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// interfaces are the names to attach to: the configured ones, or those that hold the
// listener and relay addresses. Only interfaces with an Ethernet header (and lo, which
// has one) are usable: the program reads IPv4 at offset 14.
func interfaces(cfg Config) ([]string, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	usable := func(ifc net.Interface) bool {
		return ifc.Flags&net.FlagLoopback != 0 || len(ifc.HardwareAddr) == 6
	}
	if len(cfg.Interfaces) > 0 {
		for _, name := range cfg.Interfaces {
			i := slices.IndexFunc(all, func(ifc net.Interface) bool { return ifc.Name == name })
			if i < 0 {
				return nil, fmt.Errorf("interface %q does not exist", name)
			}
			if !usable(all[i]) {
				return nil, fmt.Errorf("interface %q has no Ethernet header: the kernel data path cannot read its packets", name)
			}
		}
		return slices.Clone(cfg.Interfaces), nil
	}
	want := []netip.Addr{cfg.RelayIP}
	for _, l := range cfg.Listeners {
		want = append(want, l.Addr().Unmap())
	}
	var names []string
	for _, ifc := range all {
		if ifc.Flags&net.FlagUp == 0 || !usable(ifc) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		holds := false
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().Is4() {
				continue
			}
			for _, w := range want {
				if w == p.Addr() || w.IsUnspecified() {
					holds = true
				}
			}
		}
		// 127.0.0.0/8 is lo's whatever address it holds.
		for _, w := range want {
			if w.IsLoopback() && ifc.Flags&net.FlagLoopback != 0 {
				holds = true
			}
		}
		if holds {
			names = append(names, ifc.Name)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no interface with an Ethernet header holds the listener or relay addresses: set turn.offload_interfaces")
	}
	return names, nil
}

// Interfaces are the interfaces the program is attached to.
func (d *Datapath) Interfaces() []string { return slices.Clone(d.ifaces) }

// ProgramID is the kernel's id of the program (what bpftool prog and net show).
func (d *Datapath) ProgramID() uint32 { return d.progID }

// Attached reports whether the program is attached to any of its interfaces now, as the
// kernel's tcx queries (what bpftool net shows) say; false after Close.
func (d *Datapath) Attached() (bool, error) {
	for _, ifindex := range d.ifindex {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return false, err
		}
		for _, p := range res.Programs {
			if uint32(p.ID) == d.progID {
				return true, nil
			}
		}
	}
	return false, nil
}

// Close detaches the program and frees everything; safe to call more than once.
func (d *Datapath) Close() error {
	var errs []error
	d.closeOnce.Do(func() {
		for _, l := range d.links {
			errs = append(errs, l.Close())
		}
		if d.bucketMem != nil {
			errs = append(errs, unix.Munmap(d.bucketMem))
		}
		if d.routes != nil {
			d.routes.close()
		}
		errs = append(errs, d.objs.Close())
	})
	return errors.Join(errs...)
}

// NewBucket takes a token bucket of bps bits per second from the shared memory. ok is
// false when every bucket is taken (the allocation then stays in userspace).
func (d *Datapath) NewBucket(bps uint64) (idx uint32, tat *atomic.Uint64, ok bool) {
	d.bmu.Lock()
	switch {
	case len(d.freeB) > 0:
		idx = d.freeB[len(d.freeB)-1]
		d.freeB = d.freeB[:len(d.freeB)-1]
	case d.nextB < d.maxB:
		idx = d.nextB
		d.nextB++
	default:
		d.bmu.Unlock()
		return 0, nil, false
	}
	d.bmu.Unlock()
	tat, bpsp := d.bucket(idx)
	tat.Store(0) // full
	bpsp.Store(bps)
	return idx, tat, true
}

// FreeBucket gives a bucket back, once nothing refers to it.
func (d *Datapath) FreeBucket(idx uint32) {
	if idx == 0 || idx >= d.maxB {
		return
	}
	_, bps := d.bucket(idx)
	bps.Store(0)
	d.bmu.Lock()
	d.freeB = append(d.freeB, idx)
	d.bmu.Unlock()
}

// bucket points into the shared memory: the program updates tat with an atomic
// compare-and-swap, and so does userspace, on the same 8 aligned bytes.
func (d *Datapath) bucket(idx uint32) (tat, bps *atomic.Uint64) {
	p := unsafe.Pointer(&d.bucketMem[int(idx)*bucketSize])
	return (*atomic.Uint64)(p), (*atomic.Uint64)(unsafe.Add(p, 8))
}

// SetPermission installs a permission for peer on allocation alloc.
func (d *Datapath) SetPermission(alloc uint32, peer netip.Addr) error {
	if !peer.Unmap().Is4() {
		return nil
	}
	k := datapathPermKey{Alloc: alloc, PeerIp: be32(peer.Unmap())}
	return d.objs.Perms.Update(&k, uint32(1), ebpf.UpdateAny)
}

// DeletePermission removes it; one that is not there is no error.
func (d *Datapath) DeletePermission(alloc uint32, peer netip.Addr) error {
	if !peer.Unmap().Is4() {
		return nil
	}
	k := datapathPermKey{Alloc: alloc, PeerIp: be32(peer.Unmap())}
	if err := d.objs.Perms.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// ErrNotEligible: the channel stays in userspace (an IPv6 client or peer, no route the
// program can take).
var ErrNotEligible = errors.New("not for the kernel data path")

// AddChannel writes a channel into both directions' maps. The caller has checked the
// peer against the policy.
func (d *Datapath) AddChannel(c Channel) error {
	client, peer, local := c.Client.Addr().Unmap(), c.Peer.Addr().Unmap(), c.Local.Addr().Unmap()
	if !client.Is4() || !peer.Is4() || !(local.Is4() || local.IsUnspecified()) {
		return ErrNotEligible
	}
	if local.IsUnspecified() {
		local = netip.IPv4Unspecified()
	}
	toPeer, err := d.routes.lookup(d.relay, peer)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotEligible, err)
	}
	toClient, err := d.routes.lookup(local, client)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotEligible, err)
	}
	ck := c2pKey(c)
	cv := datapathC2pVal{
		Alloc: c.Alloc, PeerIp: be32(peer), PeerPort: htons(c.Peer.Port()), RelayPort: htons(c.Relay.Port()),
		OutIfindex: toPeer.ifindex, Mtu: toPeer.mtu, Bucket: c.Up, UserBucket: c.UserUp,
	}
	pk := p2cKey(c)
	pv := datapathP2cVal{
		Alloc: c.Alloc, ClientIp: be32(client), LocalIp: be32(local),
		ClientPort: htons(c.Client.Port()), LocalPort: htons(c.Local.Port()), Channel: htons(c.Number),
		OutIfindex: toClient.ifindex, Mtu: toClient.mtu, Bucket: c.Down, UserBucket: c.UserDown,
	}
	if err := d.objs.P2c.Update(&pk, &pv, ebpf.UpdateAny); err != nil {
		return err
	}
	if err := d.objs.C2p.Update(&ck, &cv, ebpf.UpdateAny); err != nil {
		_ = d.objs.P2c.Delete(&pk)
		return err
	}
	return nil
}

// RemoveChannel deletes a channel from both maps and returns what the kernel relayed
// on it; one that is not there counts nothing.
func (d *Datapath) RemoveChannel(c Channel) (Counts, error) {
	var n Counts
	var errs []error
	ck, pk := c2pKey(c), p2cKey(c)
	var cv datapathC2pVal
	switch err := d.objs.C2p.LookupAndDelete(&ck, &cv); {
	case err == nil:
		n.ToPeerBytes, n.ToPeerPackets = cv.Bytes, cv.Packets
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		errs = append(errs, err)
	}
	var pv datapathP2cVal
	switch err := d.objs.P2c.LookupAndDelete(&pk, &pv); {
	case err == nil:
		n.ToClientBytes, n.ToClientPackets = pv.Bytes, pv.Packets
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// ChannelCounts is what the kernel has relayed on a channel so far.
func (d *Datapath) ChannelCounts(c Channel) Counts {
	var n Counts
	ck, pk := c2pKey(c), p2cKey(c)
	var cv datapathC2pVal
	if d.objs.C2p.Lookup(&ck, &cv) == nil {
		n.ToPeerBytes, n.ToPeerPackets = cv.Bytes, cv.Packets
	}
	var pv datapathP2cVal
	if d.objs.P2c.Lookup(&pk, &pv) == nil {
		n.ToClientBytes, n.ToClientPackets = pv.Bytes, pv.Packets
	}
	return n
}

// Stats sums the program's per-CPU counters.
func (d *Datapath) Stats() (Stats, error) {
	var sum [7]uint64
	for i := range sum {
		var per []uint64
		if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, err
		}
		for _, v := range per {
			sum[i] += v
		}
	}
	return Stats{
		Counts: Counts{
			ToPeerPackets: sum[0], ToPeerBytes: sum[1],
			ToClientPackets: sum[2], ToClientBytes: sum[3],
		},
		DroppedNoPermission: sum[4],
		DroppedBandwidth:    sum[5],
		Punted:              sum[6],
	}, nil
}

func c2pKey(c Channel) datapathC2pKey {
	local := c.Local.Addr().Unmap()
	if local.IsUnspecified() {
		local = netip.IPv4Unspecified()
	}
	return datapathC2pKey{
		ClientIp: be32(c.Client.Addr().Unmap()), LocalIp: be32(local),
		ClientPort: htons(c.Client.Port()), LocalPort: htons(c.Local.Port()), Channel: htons(c.Number),
	}
}

func p2cKey(c Channel) datapathP2cKey {
	return datapathP2cKey{PeerIp: be32(c.Peer.Addr().Unmap()), PeerPort: htons(c.Peer.Port()), RelayPort: htons(c.Relay.Port())}
}

// be32 and htons give the value whose bytes in this host's memory are the address or
// port in network byte order, as the program compares them.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func roundPage(n int) int {
	ps := os.Getpagesize()
	return (n + ps - 1) / ps * ps
}

// Sweep reads every channel's counts with a few batched lookups and calls f for each
// direction of each: alloc and channel number identify it.
func (d *Datapath) Sweep(f func(alloc uint32, channel uint16, c Counts)) error {
	var ck []datapathC2pKey
	var cv []datapathC2pVal
	err := sweepMap(d.objs.C2p, &ck, &cv, func(i int) {
		f(cv[i].Alloc, ntohs(ck[i].Channel), Counts{ToPeerBytes: cv[i].Bytes, ToPeerPackets: cv[i].Packets})
	})
	if err != nil {
		return err
	}
	var pk []datapathP2cKey
	var pv []datapathP2cVal
	return sweepMap(d.objs.P2c, &pk, &pv, func(i int) {
		f(pv[i].Alloc, ntohs(pv[i].Channel), Counts{ToClientBytes: pv[i].Bytes, ToClientPackets: pv[i].Packets})
	})
}

// sweepMap walks a hash map in batches. A batch must hold a whole hash bucket: when the
// kernel says one does not fit (ENOSPC), the batch grows.
func sweepMap[K, V any](m *ebpf.Map, keys *[]K, vals *[]V, each func(i int)) error {
	size := 256
	var cursor ebpf.MapBatchCursor
	for {
		if len(*keys) < size {
			*keys, *vals = make([]K, size), make([]V, size)
		}
		n, err := m.BatchLookup(&cursor, *keys, *vals, nil)
		for i := 0; i < n; i++ {
			each(i)
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil // done
		case errors.Is(err, unix.ENOSPC) && n == 0 && size < 1<<16:
			size *= 4
		case err != nil:
			return err
		}
	}
}

func ntohs(p uint16) uint16 { return htons(p) }
