package relay

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/metrics"
)

// Auth failure reasons the gate adds to the auth package's.
const reasonWrongRealm = "wrong_realm"

// Channel numbers a client may bind. RFC 8656 narrowed the range to 0x4000-0x4FFF, but
// RFC 5766 clients still in wide use pick from 0x4000-0x7FFF (coturn's turnutils_uclient,
// libre/baresip), and numbers above 0x4FFF are otherwise unused, so the old range stays
// accepted; anything outside it is a 400.
const (
	minChannel        = 0x4000
	maxChannel        = 0x7FFF
	maxChannelRFC8656 = 0x4FFF
)

// replier sends on the transport a request came in on: responses, and (the fast path)
// ChannelData from peers.
type replier interface {
	reply(b []byte, to netip.AddrPort)
	// sendChannelData sends a ChannelData message (header included) to the client.
	sendChannelData(b []byte, to netip.AddrPort) error
}

// gate inspects everything a client sends before pion does. There is one per socket
// read loop (UDP socket or TCP/TLS connection), so its buffers need no locking.
type gate struct {
	s         *Server
	ctr       *counters // the data path's (s.counters)
	transport string    // metrics label: udp, tcp or tls
	local     netip.AddrPort
	stream    bool
	bindings  prometheus.Counter

	msg stun.Message
	out []byte

	// An Allocate passed to pion with a quota slot reserved; settled on the next read.
	pending    tupleKey
	hasPending bool

	// The relay address generator pion calls for this socket's Allocates (family.go):
	// this UDP socket's own, or the one of this connection's TCP/TLS listener.
	gen     *familyGen
	holding atomic.Bool                      // g holds gen for an Allocate pion is handling
	addrErr atomic.Pointer[addressErrorNote] // an Allocate whose success answer needs ADDRESS-ERROR-CODE

	// The fast path's cache of this socket's allocations by client address (a client
	// always lands on the same socket). Only this gate's read loop touches it.
	cache map[netip.AddrPort]*allocation
}

func newGate(s *Server, transport string, local netip.AddrPort, stream bool) *gate {
	return &gate{
		s: s, ctr: s.counters, transport: transport, local: local, stream: stream,
		bindings: s.metrics.STUNBindingRequests.WithLabelValues(transport),
		out:      make([]byte, 0, 256),
		gen:      newFamilyGen(s),
	}
}

// inspect handles what relay answers itself and reports whether pion should see b.
func (g *gate) inspect(b []byte, from netip.AddrPort, rep replier) bool {
	g.handled()
	if isChannelData(b) {
		g.channelData(b, from)
		return false
	}
	if !isSTUN(b) {
		g.ctr.dropped[dropMalformedIdx].Inc() // neither STUN nor ChannelData
		return false
	}
	set := g.s.settings.Load()
	if binary.BigEndian.Uint16(b[0:2]) == typeBindingRequest {
		g.bindings.Inc() // before the reply, so a client that saw the answer sees it counted
		g.out = appendBindingSuccess(g.out[:0], b[8:20], from, set.software)
		rep.reply(g.out, from)
		return false
	}
	g.msg.Raw = append(g.msg.Raw[:0], b...)
	if err := g.msg.Decode(); err != nil {
		// Bad attribute lengths and the like: a request gets 400, anything else is dropped.
		if b[0]&0x01 == 0 && b[1]&0x10 == 0 && g.unauthReply(set, from) {
			g.badRequest(set, b, from, rep)
		} else {
			g.ctr.dropped[dropMalformedIdx].Inc()
		}
		return false
	}
	switch g.msg.Type.Class {
	case stun.ClassIndication:
		if g.msg.Type.Method == stun.MethodSend {
			return true // pion relays it if a permission exists; relayConn checks the policy
		}
		g.ctr.dropped[dropMalformedIdx].Inc()
		return false
	case stun.ClassRequest:
	default:
		g.ctr.dropped[dropMalformedIdx].Inc() // responses are not for a server
		return false
	}
	switch g.msg.Type.Method {
	case stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind:
		return g.control(set, b, from, rep)
	}
	if g.unauthReply(set, from) {
		g.respond(set, from, rep, stun.CodeBadRequest, nil) // unknown method
	}
	return false
}

// handled settles what the last Allocate passed to pion left: pion is done with it when
// it reads again. A stream connection calls it as pion asks for the next frame, before
// waiting for the client to send one, so that a client that sends nothing more after
// an Allocate pion never answered cannot keep its listener's generator (family.go).
func (g *gate) handled() {
	if g.hasPending {
		g.hasPending = false
		g.s.allocs.settle(g.pending)
	}
	if g.holding.Load() {
		g.releaseFamily()
	}
	if g.addrErr.Load() != nil {
		g.addrErr.Store(nil)
	}
}

// unauthReply reports whether a reply to an unauthenticated request may go to from: a
// reply is bigger than the request, so answering spoofed floods in full would make the
// server a reflector. Over the limit, the request is dropped and counted.
func (g *gate) unauthReply(set *settings, from netip.AddrPort) bool {
	ip := sourceOf(from.Addr())
	if set.unauth.allow(ip[:], time.Now()) {
		return true
	}
	g.ctr.dropped[dropRateLimitedIdx].Inc()
	return false
}

// sourceOf is what the per-source limits count a client address as: an IPv4 address
// itself, an IPv6 one by its /64. One host usually holds a whole /64 and may send from
// any address in it: counted one by one, each new address would get a fresh budget.
func sourceOf(a netip.Addr) [16]byte {
	b := a.As16()
	if a.Is6() && !a.Is4In6() {
		clear(b[8:])
	}
	return b
}

// badRequest answers a request that does not decode with 400, taking the method and
// transaction ID straight from its header.
func (g *gate) badRequest(set *settings, b []byte, from netip.AddrPort, rep replier) {
	t := binary.BigEndian.Uint16(b[0:2]) &^ 0x0110
	method := stun.Method((t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2))
	var txid [stun.TransactionIDSize]byte
	copy(txid[:], b[8:20])
	g.msg.Reset()
	g.msg.Type = stun.NewType(method, stun.ClassRequest)
	g.msg.TransactionID = txid
	g.respond(set, from, rep, stun.CodeBadRequest, nil)
}

// control checks a TURN request's allocation, credentials, peers and quota, answering
// refusals itself with the code RFC 8656 asks for (pion answers some of them wrongly or
// not at all). Requests it passes are ones pion will accept, except for pion's own nonce
// and retransmission handling.
func (g *gate) control(set *settings, b []byte, from netip.AddrPort, rep replier) bool {
	m := &g.msg
	k := tupleKey{client: from, local: g.local, stream: g.stream}
	method := m.Type.Method
	if method != stun.MethodAllocate && !g.s.allocs.exists(k) {
		if g.unauthReply(set, from) {
			g.respond(set, from, rep, stun.CodeAllocMismatch, nil)
		}
		return false
	}
	cred, ok, pass := g.authenticate(set, from, rep, k)
	if !ok {
		return pass
	}
	switch method {
	case stun.MethodAllocate:
		return g.allocate(set, b, from, rep, k, cred)
	case stun.MethodRefresh:
		return g.refresh(set, b, from, rep, k, cred.key)
	case stun.MethodCreatePermission:
		return g.createPermission(set, from, rep, k, cred.key)
	case stun.MethodChannelBind:
		return g.channelBind(set, from, rep, k, cred.key)
	}
	return true
}

// capLifetime caps the LIFETIME of an Allocate or Refresh in b at max_lifetime.
func (g *gate) capLifetime(set *settings, b []byte, key []byte) {
	m := &g.msg
	// pion grants what is asked up to an hour (and 10 minutes past it): cap the
	// request at max_lifetime, re-signing it with the key it was signed with.
	if lt, err := m.Get(stun.AttrLifetime); err == nil && len(lt) == 4 {
		if limit := lifetimeSeconds(set.maxLifetime); binary.BigEndian.Uint32(lt) > limit {
			clampLifetime(b, limit, key)
		}
	}
}

// credentials are what a request was authenticated with.
type credentials struct {
	key      []byte // the long-term key it is signed with
	username string // USERNAME
	userID   string // the quota/account id; empty when only an allocation's own key verified it
}

// authenticate checks the credentials of a TURN request. When ok is false the request is
// refused (answered here, or dropped), or pass says pion should see it anyway: pion
// challenges a request without MESSAGE-INTEGRITY with 401, REALM and a NONCE of its own,
// and answers one without USERNAME, REALM or NONCE with 400.
//
// A valid request is never refused, however many failures anybody sent before it: every
// part of a failure can be forged from any source address over UDP, so refusing a user
// after failures would let anyone lock any user out. What is counted, and how:
//   - a NONCE pion never handed out (made up, or from before a restart) proves nothing:
//     438 with a fresh nonce, as RFC 8489 §9.2.4 asks, before any key is derived, so that
//     a guesser cannot learn whether a password was right without a real nonce;
//   - a wrong realm, or a USERNAME that names no credentials (not a static user and not
//     well-formed, current REST credentials): 401, counted by reason, no budget spent,
//     since no password was tried;
//   - a wrong MESSAGE-INTEGRITY for real credentials with a real nonce is a password
//     guess: counted (bad_password), and spends the source IP's failure budget and a
//     static user's. Past either, guesses get no answer at all.
//
// Every refusal answered goes through the reply limit per source IP (reflection).
func (g *gate) authenticate(set *settings, from netip.AddrPort, rep replier, k tupleKey) (cred credentials, ok, pass bool) {
	m := &g.msg
	if !m.Contains(stun.AttrMessageIntegrity) {
		return cred, false, g.unauthReply(set, from)
	}
	user, errU := m.Get(stun.AttrUsername)
	realm, errR := m.Get(stun.AttrRealm)
	nonce, errN := m.Get(stun.AttrNonce)
	if errU != nil || errR != nil || errN != nil {
		return cred, false, g.unauthReply(set, from)
	}
	now := time.Now()
	if !g.s.nonces.known(nonce, now) {
		if !g.unauthReply(set, from) {
			return cred, false, false
		}
		if fresh, ok := g.s.nonces.fresh(now); ok {
			g.respond(set, from, rep, stun.CodeStaleNonce, nil, stun.NewRealm(set.realm), stun.NewNonce(fresh))
			return cred, false, false
		}
		return cred, false, true // pion answers 438 with a new nonce, which the book learns
	}
	method := m.Type.Method
	refuse := func(reason string) {
		g.s.metrics.AuthFailures.WithLabelValues(reason).Inc()
		if method == stun.MethodAllocate {
			g.s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocUnauthorized).Inc()
		}
		g.refused(from, user, reason)
	}
	if string(realm) != set.realm {
		refuse(reasonWrongRealm)
		if g.unauthReply(set, from) {
			g.respond(set, from, rep, stun.CodeUnauthorized, nil, stun.NewRealm(set.realm), stun.NewNonce(string(nonce)))
		}
		return cred, false, false
	}
	userID, reason, admitted := set.auth.Admit(string(user))
	var key []byte
	verified := false // by this configuration's credentials, not by an allocation's own
	if admitted {
		// The key this user's last request was verified with, if the configuration has
		// not changed since (Reload empties the cache): one HMAC check instead of
		// deriving a key per secret.
		if c, hit := set.keys.verified(string(user), set.realm); hit && stun.MessageIntegrity(c).Check(m) == nil {
			key, verified = c, true
		} else {
			for _, c := range set.auth.Keys(string(user), set.realm) {
				if stun.MessageIntegrity(c).Check(m) == nil {
					key, verified = c, true
					break
				}
			}
		}
	}
	if key == nil && method != stun.MethodAllocate {
		// An open allocation keeps the credentials it was made with.
		if c := g.s.allocs.ownKey(k, string(user)); c != nil && stun.MessageIntegrity(c).Check(m) == nil {
			key = c
		}
	}
	if key != nil {
		cred = credentials{key: key, username: string(user), userID: userID}
		if ctl := g.s.ctl; ctl != nil {
			id := userID
			if id == "" {
				id = userIDOf(cred.username) // verified by its allocation's own key
			}
			if ctl.Revoked(cred.username, id) {
				// The operator cut these credentials (or their user) off: as good as
				// wrong ones, until they would have expired anyway.
				refuse(ReasonRevoked)
				if g.unauthReply(set, from) {
					g.respond(set, from, rep, stun.CodeUnauthorized, nil, stun.NewRealm(set.realm), stun.NewNonce(string(nonce)))
				}
				return credentials{}, false, false
			}
		}
		set.keys.put(cred.username, set.realm, key, verified)
		return cred, true, false
	}
	if !admitted {
		refuse(string(reason))
		if g.unauthReply(set, from) {
			g.respond(set, from, rep, stun.CodeUnauthorized, nil, stun.NewRealm(set.realm), stun.NewNonce(string(nonce)))
		}
		return cred, false, false
	}
	refuse(string(auth.ReasonBadPassword))
	ip := sourceOf(from.Addr())
	answer := set.failIP.allow(ip[:], now)
	if lim := set.failUser[string(user)]; lim != nil && !lim.AllowN(now, 1) {
		answer = false
	}
	if !answer {
		// Guessing gets no feedback; a right password would still be accepted.
		g.ctr.dropped[dropAuthBlockedIdx].Inc()
		return cred, false, false
	}
	if g.unauthReply(set, from) {
		g.respond(set, from, rep, stun.CodeUnauthorized, nil, stun.NewRealm(set.realm), stun.NewNonce(string(nonce)))
	}
	return cred, false, false
}

// peerAllowed checks a peer named in CreatePermission or ChannelBind. The port counts
// too: our own relay address is a valid peer only on relay ports.
func (g *gate) peerAllowed(set *settings, peer netip.AddrPort) bool {
	if reason := set.policy.CheckAddr(peer); reason != DenyNone {
		g.ctr.peerDenied(reason)
		g.s.log.Debug("peer refused by the peer policy", "peer", peer.String(), "reason", string(reason),
			"hint", "see [peers] deny/allow")
		return false
	}
	return true
}

// respond sends an error response to the request in g.msg. key, when set, signs it
// (responses to authenticated requests carry MESSAGE-INTEGRITY).
func (g *gate) respond(set *settings, to netip.AddrPort, rep replier, code stun.ErrorCode, key []byte, extra ...stun.Setter) {
	g.respondReason(set, to, rep, code, "", key, extra...)
}

// respondReason is respond with a reason phrase of its own ("": the code's standard one).
func (g *gate) respondReason(set *settings, to netip.AddrPort, rep replier, code stun.ErrorCode, reason string, key []byte, extra ...stun.Setter) {
	var ec stun.Setter = code
	if reason != "" {
		ec = &stun.ErrorCodeAttribute{Code: code, Reason: []byte(reason)}
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(g.msg.TransactionID),
		stun.NewType(g.msg.Type.Method, stun.ClassErrorResponse),
		ec,
	}
	setters = append(setters, extra...)
	if set.software != "" {
		setters = append(setters, stun.NewSoftware(set.software))
	}
	if key != nil {
		setters = append(setters, stun.MessageIntegrity(key))
	}
	setters = append(setters, stun.Fingerprint)
	resp, err := stun.Build(setters...)
	if err != nil {
		return
	}
	rep.reply(resp.Raw, to)
	if g.s.log.Enabled(context.Background(), slog.LevelDebug) {
		g.s.log.Debug("refused", "method", g.msg.Type.Method.String(), "code", int(code),
			"client", to.String(), "transport", g.transport)
	}
}

// keyCache hands pion the long-term key the gate verified a request with, and lets the
// gate check a user's next request against the same key before deriving any. With
// several secrets (rotation) or an allocation's own credentials pion could not know
// which key applies; the gate does. Each configuration has its own, so a key from a
// secret a reload removed verifies nothing new.
type keyCache struct {
	mu sync.Mutex
	m  map[string]cachedKey
}

type cachedKey struct {
	key      []byte
	verified bool // derived from the configuration's credentials (not an allocation's own)
}

const maxCachedKeys = 1 << 16

func (c *keyCache) put(username, realm string, key []byte, verified bool) {
	id := username + "\x00" + realm
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		// Only verified keys land here, so a full cache is simply forgotten; the gate
		// refills it on the next request of each user.
		c.m = make(map[string]cachedKey)
	}
	if old, ok := c.m[id]; ok && old.verified == verified && string(old.key) == string(key) {
		return
	}
	c.m[id] = cachedKey{key: key, verified: verified}
}

// get is pion's AuthHandler: the key the gate just verified this user's request with.
func (c *keyCache) get(username, realm string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[username+"\x00"+realm]
	return k.key, ok
}

// verified returns the user's key if it came from the configuration's credentials.
func (c *keyCache) verified(username, realm string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[username+"\x00"+realm]
	return k.key, ok && k.verified
}
