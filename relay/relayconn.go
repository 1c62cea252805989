package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/internal/rawudp"
)

var (
	errRelayPortsExhausted = errors.New("relay: no free port in the relay port range")
	errNoTCPRelay          = errors.New("relay: TCP relays (RFC 6062) are not supported")
	errRelayPortBusy       = errors.New("relay: relay port in use")
)

// relayPorts is the RelayAddressGenerator handed to pion: it binds relay sockets on the
// relay IP within the configured port range and advertises the public IP.
type relayPorts struct {
	bind      netip.Addr // relay_ip: where sockets are bound
	advertise netip.Addr // public_ip, or relay_ip: what XOR-RELAYED-ADDRESS says
	min, max  uint16

	set   *atomic.Pointer[settings] // the server's: the peer policy and the limits
	ctr   *counters                 // the server's, handed to every relay socket
	inUse prometheus.Gauge          // relay_turn_relay_ports_in_use

	mu   sync.Mutex
	open map[uint16]*relayConn
	next uint16 // where the next search starts; random at first so restarts do not reuse ports in order

	pollers *rawudp.Pollers[*relayConn] // read every relay socket (relaysock.go)
}

// newRelayPorts makes the relay sockets of one address family (bind's), read by
// pollers (shared by both families).
func newRelayPorts(s *Server, bind, advertise netip.Addr, min, max uint16, pollers *rawudp.Pollers[*relayConn]) *relayPorts {
	span := int(max) - int(min) + 1
	return &relayPorts{
		bind: bind, advertise: advertise, min: min, max: max,
		set: &s.settings, ctr: s.counters, inUse: s.metrics.RelayPortsInUse,
		open:    make(map[uint16]*relayConn),
		next:    min + uint16(rand.IntN(span)),
		pollers: pollers,
	}
}

// Validate checks that the IPv4 relay address is IPv4 (IPv6 ones are relay_ip6's).
func (r *relayPorts) Validate() error {
	if !r.bind.Is4() {
		return fmt.Errorf("relay: relay_ip %s: relay_ip is the IPv4 relay address; put an IPv6 one in relay_ip6", r.bind)
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

func (r *relayPorts) bindPort(_ string, port uint16) (net.PacketConn, net.Addr, error) {
	c := &relayConn{r: r, ctr: r.ctr, port: port, wake: make(chan struct{}, 1)}
	r.mu.Lock()
	if _, busy := r.open[port]; busy {
		r.mu.Unlock()
		return nil, nil, errRelayPortBusy
	}
	r.open[port] = c // claimed before binding, so that no other Allocate binds it meanwhile
	r.mu.Unlock()
	sock, err := r.pollers.Open(netip.AddrPortFrom(r.bind, port), c)
	if err != nil {
		r.mu.Lock()
		delete(r.open, port)
		r.mu.Unlock()
		return nil, nil, err
	}
	c.sock = sock
	r.inUse.Inc()
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

// relayConn is one allocation's relay socket as pion sees it. Every datagram to a peer
// passes the peer policy here, per packet, so that a permission on the server's own
// address reaches only relay ports, and is counted as it goes. Datagrams from peers are
// read by the server's pollers, not by pion: those for a channel go to the client
// straight away, and only the rest (Data indications) are queued for pion's read loop,
// which otherwise sleeps.
type relayConn struct {
	sock  *rawudp.Conn // nil until bound
	r     *relayPorts
	ctr   *counters
	port  uint16
	once  sync.Once
	alloc atomic.Pointer[allocation] // set once pion reports the allocation

	c2pBytes, c2pPackets, p2cBytes, p2cPackets atomic.Uint64
	budgetDropped                              atomic.Uint64 // datagrams dropped over the user's byte budget

	qmu     sync.Mutex
	queue   []queuedDatagram // for pion; nil while empty
	qclosed bool
	wake    chan struct{} // one token: something was queued, or the socket closed
}

type queuedDatagram struct {
	b    []byte
	from netip.AddrPort
}

// maxQueued bounds what waits for pion on one relay socket; more is dropped.
const maxQueued = 64

// relayCounts is what one allocation relayed, for the allocation log.
type relayCounts struct{ c2pBytes, c2pPackets, p2cBytes, p2cPackets, budgetDropped uint64 }

func (c *relayConn) counts() relayCounts {
	return relayCounts{c.c2pBytes.Load(), c.c2pPackets.Load(), c.p2cBytes.Load(), c.p2cPackets.Load(), c.budgetDropped.Load()}
}

// received handles a datagram a poller read into buf[4:4+n] from a source of the relay
// socket's family (IPv4 sockets, and IPv6-only ones: from is never a mapped address).
func (c *relayConn) received(buf []byte, n int, from netip.AddrPort, out *sendBatch) {
	if c.r.advertise != c.r.bind && from.Addr() == c.r.bind && from.Port() >= c.r.min && from.Port() <= c.r.max {
		// Another allocation of ours delivered this locally: it comes from the public
		// address, the one peers were told and permissions name.
		from = netip.AddrPortFrom(c.r.advertise, from.Port())
	}
	if c.fromPeer(buf, n, from, out) {
		return
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.qclosed {
		return
	}
	if len(c.queue) >= maxQueued {
		c.ctr.dropped[dropBacklogIdx].Inc()
		return
	}
	c.queue = append(c.queue, queuedDatagram{b: append([]byte(nil), buf[channelDataHdrSize:channelDataHdrSize+n]...), from: from})
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ReadFrom is pion's read loop: it sleeps until a datagram needs pion (a permitted peer
// without a channel: pion sends a Data indication) or the socket closes.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			d := c.queue[0]
			c.queue[0] = queuedDatagram{}
			c.queue = c.queue[1:]
			if len(c.queue) == 0 {
				c.queue = nil
			}
			c.qmu.Unlock()
			return copy(p, d.b), net.UDPAddrFromAddrPort(d.from), nil
		}
		closed := c.qclosed
		c.qmu.Unlock()
		if closed {
			return 0, nil, net.ErrClosed
		}
		<-c.wake
	}
}

// LocalAddr is the bound relay address.
func (c *relayConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.r.bind, c.port))
}

// pion sets no deadlines on relay sockets: its read loop ends when the socket closes.
func (c *relayConn) SetDeadline(time.Time) error      { return nil }
func (c *relayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *relayConn) SetWriteDeadline(time.Time) error { return nil }

func (c *relayConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		if c.sock != nil {
			err = c.sock.Close()
		} else {
			err = nil // never bound: there is no socket to close
		}
		c.qmu.Lock()
		c.qclosed, c.queue = true, nil
		close(c.wake)
		c.qmu.Unlock()
		c.r.mu.Lock()
		if c.r.open[c.port] == c {
			delete(c.r.open, c.port)
		}
		c.r.mu.Unlock()
		c.r.inUse.Dec()
	})
	return err
}
