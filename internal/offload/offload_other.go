//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package offload

import (
	"net/netip"
	"sync/atomic"
)

// Datapath does not exist here: Open always fails with ErrUnsupported.
type Datapath struct{}

// ErrNotEligible: the channel stays in userspace.
var ErrNotEligible = ErrUnsupported

// Open reports ErrUnsupported.
func Open(Config) (*Datapath, error) { return nil, ErrUnsupported }

func (d *Datapath) Interfaces() []string                            { return nil }
func (d *Datapath) Attached() (bool, error)                         { return false, ErrUnsupported }
func (d *Datapath) Close() error                                    { return nil }
func (d *Datapath) NewBucket(uint64) (uint32, *atomic.Uint64, bool) { return 0, nil, false }
func (d *Datapath) FreeBucket(uint32)                               {}
func (d *Datapath) SetPermission(uint32, netip.Addr) error          { return ErrUnsupported }
func (d *Datapath) DeletePermission(uint32, netip.Addr) error       { return ErrUnsupported }
func (d *Datapath) AddChannel(Channel) error                        { return ErrUnsupported }
func (d *Datapath) RemoveChannel(Channel) (Counts, error)           { return Counts{}, nil }
func (d *Datapath) ChannelCounts(Channel) Counts                    { return Counts{} }
func (d *Datapath) Stats() (Stats, error)                           { return Stats{}, ErrUnsupported }
