package offload

import (
	"errors"
	"net/netip"
)

// ErrUnsupported: the kernel data path does not exist on this system (not Linux, or an
// architecture bpf2go does not build for).
var ErrUnsupported = errors.New("the kernel data path needs Linux")

// MaxListenPorts is how many distinct UDP listener ports the program checks.
const MaxListenPorts = 8

// Config is what the program is loaded for.
type Config struct {
	// Listeners are the UDP listener addresses (IPv4, or unspecified for a wildcard
	// listener); IPv6 ones are left to userspace.
	Listeners []netip.AddrPort
	// RelayIP and RelayPorts: where relay sockets are bound.
	RelayIP    netip.Addr
	RelayPorts [2]uint16
	// Interfaces to attach to; empty: those that hold the listener and relay addresses
	// (every IPv4 interface for a wildcard listener).
	Interfaces []string
	// Channels, Permissions and Buckets size the maps.
	Channels, Permissions, Buckets int
}

// Channel is one channel binding as the kernel sees it.
type Channel struct {
	Alloc  uint32         // the allocation's id (its permissions are keyed by it)
	Client netip.AddrPort // the client's address
	Local  netip.AddrPort // the listener address it talks to (unspecified: a wildcard listener)
	Relay  netip.AddrPort // the relay socket's bound address
	Peer   netip.AddrPort
	Number uint16
	// Buckets (Datapath.NewBucket) each way, the allocation's and its user's; 0: none.
	Up, UserUp, Down, UserDown uint32
}

// Counts is what the kernel relayed on one channel.
type Counts struct {
	ToPeerBytes, ToPeerPackets     uint64
	ToClientBytes, ToClientPackets uint64
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.ToPeerBytes += o.ToPeerBytes
	c.ToPeerPackets += o.ToPeerPackets
	c.ToClientBytes += o.ToClientBytes
	c.ToClientPackets += o.ToClientPackets
}

// Stats are the program's totals since it was loaded.
type Stats struct {
	Counts
	DroppedNoPermission uint64 // a channel whose permission expired
	DroppedBandwidth    uint64 // over a bucket's rate
	Punted              uint64 // a bound channel's datagram left to userspace (route, checksum state, MTU)
}
