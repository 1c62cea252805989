package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

var (
	errRelayPortsExhausted = errors.New("relay: no free port in the relay port range")
	errNoTCPRelay          = errors.New("relay: TCP relays (RFC 6062) are not supported")
)

// relayPorts is the RelayAddressGenerator handed to pion: it binds relay sockets on the
// relay IP within the configured port range and advertises the public IP.
type relayPorts struct {
	s         *Server
	bind      netip.Addr // relay_ip: where sockets are bound
	advertise netip.Addr // public_ip, or relay_ip: what XOR-RELAYED-ADDRESS says
	min, max  uint16

	mu   sync.Mutex
	open map[uint16]*relayConn
	next uint16 // where the next search starts; random at first so restarts do not reuse ports in order
}

func newRelayPorts(s *Server, bind, advertise netip.Addr, min, max uint16) *relayPorts {
	span := int(max) - int(min) + 1
	return &relayPorts{
		s: s, bind: bind, advertise: advertise, min: min, max: max,
		open: make(map[uint16]*relayConn),
		next: min + uint16(rand.IntN(span)),
	}
}

func (r *relayPorts) Validate() error {
	if !r.bind.Is4() {
		return fmt.Errorf("relay: relay_ip %s: pion/turn v4 relays over IPv4 only", r.bind)
	}
	return nil
}

// AllocatePacketConn binds a relay socket: on requestedPort if given (EVEN-PORT and
// RESERVATION-TOKEN), else on the next free port of the range.
func (r *relayPorts) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if requestedPort != 0 {
		if requestedPort < int(r.min) || requestedPort > int(r.max) {
			return nil, nil, errRelayPortsExhausted
		}
		return r.bindPort(network, uint16(requestedPort))
	}
	r.mu.Lock()
	start := r.next
	r.mu.Unlock()
	span := int(r.max) - int(r.min) + 1
	for i := 0; i < span; i++ {
		port := r.min + uint16((int(start-r.min)+i)%span)
		r.mu.Lock()
		_, busy := r.open[port]
		r.mu.Unlock()
		if busy {
			continue
		}
		conn, addr, err := r.bindPort(network, port)
		if err == nil {
			r.mu.Lock()
			r.next = r.min + uint16((int(port-r.min)+1)%span)
			r.mu.Unlock()
			return conn, addr, nil
		}
	}
	return nil, nil, errRelayPortsExhausted
}

func (r *relayPorts) bindPort(network string, port uint16) (net.PacketConn, net.Addr, error) {
	u, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.bind, port)))
	if err != nil {
		return nil, nil, err
	}
	c := &relayConn{UDPConn: u, r: r, port: port}
	r.mu.Lock()
	r.open[port] = c
	r.mu.Unlock()
	r.s.metrics.RelayPortsInUse.Inc()
	return c, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.advertise, port)), nil
}

// lookup returns the open relay socket on port.
func (r *relayPorts) lookup(port uint16) *relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open[port]
}

func (r *relayPorts) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

func (r *relayPorts) openCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// relayConn is one allocation's relay socket. Every datagram pion sends to a peer passes
// the peer policy here, per packet, so that a permission on the server's own address
// reaches only relay ports, and is counted as it goes.
type relayConn struct {
	*net.UDPConn
	r     *relayPorts
	port  uint16
	once  sync.Once
	alloc atomic.Pointer[allocation] // set once pion reports the allocation

	c2pBytes, c2pPackets, p2cBytes, p2cPackets atomic.Uint64
}

// relayCounts is what one allocation relayed, for the allocation log.
type relayCounts struct{ c2pBytes, c2pPackets, p2cBytes, p2cPackets uint64 }

func (c *relayConn) counts() relayCounts {
	return relayCounts{c.c2pBytes.Load(), c.c2pPackets.Load(), c.p2cBytes.Load(), c.p2cPackets.Load()}
}

func (c *relayConn) Close() error {
	err := c.UDPConn.Close()
	c.once.Do(func() {
		c.r.mu.Lock()
		if c.r.open[c.port] == c {
			delete(c.r.open, c.port)
		}
		c.r.mu.Unlock()
		c.r.s.metrics.RelayPortsInUse.Dec()
	})
	return err
}
