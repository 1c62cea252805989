package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
)

// IPv6 relayed addresses (RFC 8656 §7.2, which took RFC 6156 in). pion/turn v4 knows
// nothing of REQUESTED-ADDRESS-FAMILY: it asks its RelayAddressGenerator for "udp4"
// whatever the client wants. The gate reads the address family attributes, answers
// what is wrong itself (400, 440), and tells the generator pion calls next, a
// familyGen, which family the Allocate it passes on wants.
//
// pion handles a request on the goroutine that read it, and calls the generator while
// doing so. A UDP listener socket has one read loop and a familyGen of its own; a TCP/TLS
// listener has one familyGen for all its connections, each read by its own goroutine,
// so an Allocate holds the familyGen from the moment the gate passes it on until pion
// answers it, asks the connection for its next frame, or closes it: new stream
// allocations on one listener are made one at a time, for the few microseconds pion
// takes. The hold never waits for the client: pion asking for the next frame releases
// it before the connection waits for bytes (an Allocate pion drops unanswered, then a
// silent client, would otherwise hold every other Allocate on the listener to
// familyWait and 508; TestStalledAllocateDoesNotHoldListener).

// Attributes and values of RFC 8656 §18.
const (
	attrAdditionalAddressFamily stun.AttrType = 0x8000 // ADDITIONAL-ADDRESS-FAMILY
	attrAddressErrorCode        stun.AttrType = 0x8001 // ADDRESS-ERROR-CODE
	familyIPv4                                = 0x01
	familyIPv6                                = 0x02
)

// familyWait bounds how long an Allocate waits for another connection's Allocate on the
// same listener to be answered; past it, the request gets 508.
const familyWait = 2 * time.Second

var errNoIPv6Relay = errors.New("relay: no IPv6 relay address (turn.relay_ip6)")

// familyTestHook, set by a test only, runs as pion asks for a relay socket: a pause
// there widens the window in which another connection's Allocate could interfere.
var familyTestHook atomic.Pointer[func()]

// familyGen is the RelayAddressGenerator of one listener socket (UDP) or one listener
// (TCP/TLS): relay sockets of the family the Allocate being handled asked for.
type familyGen struct {
	s     *Server
	lock  chan struct{} // a token: taken by the gate that passed an Allocate on
	want6 atomic.Bool
	holds atomic.Uint64 // Allocates passed on with it so far (what tests wait for)
}

func newFamilyGen(s *Server) *familyGen {
	return &familyGen{s: s, lock: make(chan struct{}, 1)}
}

// AllocatePacketConn binds a relay socket of the family the Allocate in hand wants.
func (f *familyGen) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if hook := familyTestHook.Load(); hook != nil {
		(*hook)()
	}
	if f.want6.Load() {
		if f.s.relay6 == nil {
			return nil, nil, errNoIPv6Relay // the gate answers 440 before: not reached
		}
		return f.s.relay6.AllocatePacketConn(network, requestedPort)
	}
	return f.s.relay.AllocatePacketConn(network, requestedPort)
}

// AllocateConn: TCP relays (RFC 6062) are not supported.
func (f *familyGen) AllocateConn(network string, requestedPort int) (net.Conn, net.Addr, error) {
	return f.s.relay.AllocateConn(network, requestedPort)
}

// Validate is pion's check at start; the relay addresses were checked by New.
func (f *familyGen) Validate() error { return nil }

// holdFamily takes g's generator for an Allocate about to go to pion, set to family v6
// or v4; false if another connection's Allocate held it for familyWait.
func (g *gate) holdFamily(v6 bool) bool {
	select {
	case g.gen.lock <- struct{}{}:
	default:
		t := time.NewTimer(familyWait)
		defer t.Stop()
		select {
		case g.gen.lock <- struct{}{}:
		case <-t.C:
			return false
		}
	}
	g.gen.want6.Store(v6)
	g.holding.Store(true)
	g.gen.holds.Add(1)
	return true
}

// releaseFamily gives the generator back, if g holds it: when pion answers (a write to
// the client), when pion reads again (gate.handled), or when the connection closes.
func (g *gate) releaseFamily() {
	if g.holding.Load() && g.holding.CompareAndSwap(true, false) {
		g.gen.want6.Store(false)
		<-g.gen.lock
	}
}

// allocFamily applies RFC 8656 §7.2's address family rules to an Allocate in g.msg:
// whether the relayed address is to be IPv6, and for ADDITIONAL-ADDRESS-FAMILY whether
// pion's success answer must tell the client (ADDRESS-ERROR-CODE) that the IPv6 half
// was not allocated. Otherwise it answers the request itself and returns ok false.
func (g *gate) allocFamily(set *settings, from netip.AddrPort, rep replier, key []byte) (v6, addrErr, ok bool) {
	m := &g.msg
	req, errReq := m.Get(stun.AttrRequestedAddressFamily)
	add, errAdd := m.Get(attrAdditionalAddressFamily)
	hasReq, hasAdd := errReq == nil, errAdd == nil
	bad := func() (bool, bool, bool) {
		g.respond(set, from, rep, stun.CodeBadRequest, key)
		return false, false, false
	}
	switch {
	case !hasReq && !hasAdd:
		return false, false, true
	case hasReq && hasAdd:
		return bad() // step 6: both
	case m.Contains(stun.AttrReservationToken):
		return bad() // step 5: a reservation names its family already
	case hasReq:
		if len(req) != 4 {
			return bad()
		}
		switch req[0] {
		case familyIPv4:
			return false, false, true
		case familyIPv6:
			if g.s.relay6 != nil {
				return true, false, true
			}
		}
		// Step 7: a family we do not relay.
		g.respondReason(set, from, rep, stun.CodeAddrFamilyNotSupported, "no IPv6 relay address on this server", key)
		return false, false, false
	}
	// Step 9: ADDITIONAL-ADDRESS-FAMILY asks for IPv4 and IPv6 at once (a dual
	// allocation). pion's allocations hold one relay socket, so the IPv4 half is
	// allocated and the success answer says, in ADDRESS-ERROR-CODE, that the IPv6 half
	// was not (440); a client wanting IPv6 asks again with REQUESTED-ADDRESS-FAMILY.
	if len(add) != 4 || add[0] != familyIPv6 || m.Contains(stun.AttrEvenPort) {
		return bad()
	}
	return false, true, true
}

// addressErrorNote is an Allocate whose success answer needs ADDRESS-ERROR-CODE: its
// transaction and the key to sign the answer again with.
type addressErrorNote struct {
	txid [stun.TransactionIDSize]byte
	key  []byte
}

// withAddressError returns p with ADDRESS-ERROR-CODE (IPv6, 440) added, when p is the
// success answer to the Allocate in g's note; otherwise p itself. The note is used up.
// Called on the way out of every write pion makes; without a note it costs a load.
func (g *gate) withAddressError(p []byte) []byte {
	n := g.addrErr.Load()
	if n == nil || len(p) < 20 || p[0] != 0x01 || p[1] != 0x03 || string(p[8:20]) != string(n.txid[:]) {
		return p
	}
	g.addrErr.Store(nil)
	in := &stun.Message{Raw: append([]byte(nil), p...)}
	if in.Decode() != nil {
		return p
	}
	out := &stun.Message{Type: in.Type, TransactionID: in.TransactionID}
	out.WriteHeader()
	for _, a := range in.Attributes {
		if a.Type != stun.AttrMessageIntegrity && a.Type != stun.AttrFingerprint {
			out.Add(a.Type, a.Value)
		}
	}
	code := stun.CodeAddrFamilyNotSupported
	out.Add(attrAddressErrorCode, append([]byte{familyIPv6, 0, byte(code / 100), byte(code % 100)}, "dual allocation not supported: ask for IPv6 with REQUESTED-ADDRESS-FAMILY"...))
	if stun.MessageIntegrity(n.key).AddTo(out) != nil || stun.Fingerprint.AddTo(out) != nil {
		return p
	}
	return out.Raw
}

// peerFamilyMismatch reports whether peer is of the other family than the allocation
// at k's relayed address (RFC 8656 §9.2, §11.2: 443). An IPv4-mapped peer is IPv4, as
// an IPv4 allocation's relay socket reaches it; an IPv6 one cannot.
func (g *gate) peerFamilyMismatch(k tupleKey, peer netip.AddrPort) bool {
	a := g.s.allocs.lookup(k)
	return a != nil && a.relayAddr.Addr().Is6() != peer.Addr().Unmap().Is6()
}
