package relay

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Operator control: what the admin layer (package admin) asks of the TURN server and
// what it is told. The server knows nothing of HTTP, files or Redis; it calls a Control
// at control-plane moments (credentials checked, Allocate, an allocation made or gone)
// and exposes its allocations to list and end. The data path touches only a *Usage,
// which an allocation holds from its creation: atomic loads to check a byte budget and
// one atomic add to count, with no lock and no lookup per packet.

// Control is the operator's hand on the server: revocations, byte budgets, and a feed
// of refusals and allocations. Its methods run on the server's read loops and must not
// block (no network calls); nil means none.
type Control interface {
	// Revoked reports whether credentials are revoked: username as the client sent it,
	// userID its user id (the part after the ':' of TURN REST credentials).
	Revoked(username, userID string) bool
	// OverBudget reports whether userID has relayed its bytes for the day (486 for new
	// Allocates).
	OverBudget(userID string) bool
	// AcquireUsage returns the counter of userID's relayed bytes, shared by its
	// allocations, or nil to count nothing. Each call is paired with ReleaseUsage when
	// the allocation ends.
	AcquireUsage(userID string) *Usage
	ReleaseUsage(userID string)
	// Refused is told of every request refused for its credentials or a quota.
	Refused(r Refusal)
	// AllocationCreated and AllocationEnded are told of every allocation.
	AllocationCreated(a AllocationInfo)
	AllocationEnded(e AllocationEnd)
}

// Usage counts one user id's relayed bytes today against its budget. The admin layer
// owns it (resets it at 00:00 UTC, adds what other nodes relayed); allocations hold a
// pointer to it. The zero value counts with no budget.
type Usage struct {
	limit  atomic.Int64 // bytes per day; 0 = no budget
	local  atomic.Int64 // relayed by this node today
	others atomic.Int64 // relayed today elsewhere: other nodes, earlier runs of this one
}

// allow reports whether the user may relay more today: one atomic load without a
// budget, three with one.
func (u *Usage) allow() bool {
	lim := u.limit.Load()
	return lim <= 0 || u.local.Load()+u.others.Load() < lim
}

// count adds n relayed bytes.
func (u *Usage) count(n int) { u.local.Add(int64(n)) }

// Local is what this node relayed today; Others what it last learnt of the rest.
func (u *Usage) Local() int64  { return u.local.Load() }
func (u *Usage) Others() int64 { return u.others.Load() }

// Total is what the user relayed today, as far as this node knows.
func (u *Usage) Total() int64 { return u.local.Load() + u.others.Load() }

// Limit is the budget in bytes per day; 0 is none.
func (u *Usage) Limit() int64 { return u.limit.Load() }

// SetLimit sets the budget (a reload may change it).
func (u *Usage) SetLimit(n int64) { u.limit.Store(n) }

// SetOthers records what the rest of the fleet (and earlier runs) relayed today.
func (u *Usage) SetOthers(n int64) { u.others.Store(n) }

// Reset starts a new day. local is what the caller had counted as this node's before
// (flushed to the store); whatever was counted since stays, counted on the new day.
func (u *Usage) Reset(local int64) {
	u.local.Add(-local)
	u.others.Store(0)
}

// Refusal reasons beyond the auth package's (malformed, expired, too_far_future,
// unknown_user, bad_password) and the gate's wrong_realm.
const (
	ReasonRevoked    = "revoked"     // the credentials or their user id are revoked (401)
	ReasonOverBudget = "over_budget" // the user id relayed its bytes for the day (486)
	ReasonQuota      = "quota"       // user_allocations reached (486)
	ReasonCapacity   = "capacity"    // total_allocations reached (508)
)

// Refusal is one request refused for its credentials or a quota.
type Refusal struct {
	Time      time.Time `json:"time"`
	Source    string    `json:"source"`    // the client's address
	Transport string    `json:"transport"` // udp, tcp or tls
	Method    string    `json:"method"`    // the TURN method refused
	User      string    `json:"user"`      // the user id, when the username has one
	Username  string    `json:"username"`  // as sent, cut to maxShownUsername bytes
	Reason    string    `json:"reason"`
}

// maxShownUsername bounds a username kept in a refusal: it is client input.
const maxShownUsername = 128

// shownUsername cuts a username sent by a client to something bounded and printable.
func shownUsername(b []byte) string {
	if len(b) > maxShownUsername {
		b = b[:maxShownUsername]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// CredentialExpiry is the expiry of TURN REST credentials ("<unix-seconds>:<id>"), or
// false for a static user's name.
func CredentialExpiry(username string) (time.Time, bool) {
	exp, _, ok := strings.Cut(username, ":")
	if !ok || exp == "" || len(exp) > 19 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}

// AllocationInfo is one live allocation as the operator sees it.
type AllocationInfo struct {
	ID                  string     `json:"id"`
	User                string     `json:"user"`
	Username            string     `json:"username"`
	ExpiresCredential   *time.Time `json:"expires_credential"` // nil for a static user
	Client              string     `json:"client"`
	Transport           string     `json:"transport"`
	Relay               string     `json:"relay"`
	Created             time.Time  `json:"created"`
	LifetimeLeftS       int64      `json:"lifetime_left_s"`
	Permissions         int        `json:"permissions"`
	Channels            int        `json:"channels"`
	BytesClientToPeer   uint64     `json:"bytes_client_to_peer"`
	BytesPeerToClient   uint64     `json:"bytes_peer_to_client"`
	PacketsClientToPeer uint64     `json:"packets_client_to_peer"`
	PacketsPeerToClient uint64     `json:"packets_peer_to_client"`
	// The current rate each way, in bits per second, over the last second or so.
	BPSClientToPeer uint64 `json:"bps_client_to_peer"`
	BPSPeerToClient uint64 `json:"bps_peer_to_client"`
}

// AllocationEnd is an allocation that ended, with the fields of the allocation log line.
type AllocationEnd struct {
	ID                  string `json:"id"`
	User                string `json:"user"`
	Client              string `json:"client"`
	Transport           string `json:"transport"`
	Relay               string `json:"relay"`
	Duration            string `json:"duration"`
	BytesClientToPeer   uint64 `json:"bytes_client_to_peer"`
	PacketsClientToPeer uint64 `json:"packets_client_to_peer"`
	BytesPeerToClient   uint64 `json:"bytes_peer_to_client"`
	PacketsPeerToClient uint64 `json:"packets_peer_to_client"`
	DroppedBudget       uint64 `json:"dropped_budget,omitempty"` // datagrams dropped over the byte budget
	Reason              string `json:"reason"`
}

// Why an allocation ended, besides the reasons in allocations.go.
const (
	EndAdmin   = "admin"   // the operator ended it (DELETE /v1/allocations/{id})
	EndRevoked = "revoked" // its credentials or its user id were revoked
)

// SetControl hands the server its operator control; call it before Start.
func (s *Server) SetControl(c Control) {
	s.ctl = c
	s.allocs.ctl = c
}

// newAllocationID is a fresh random id for an allocation (16 hex digits).
func newAllocationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Allocations lists the live allocations, those of userID only if it is not "".
func (s *Server) Allocations(userID string) []AllocationInfo {
	t := s.allocs
	t.mu.Lock()
	list := make([]*allocation, 0, len(t.byKey))
	for _, a := range t.byKey {
		if userID == "" || a.userID == userID {
			list = append(list, a)
		}
	}
	t.mu.Unlock()
	now := time.Now()
	out := make([]AllocationInfo, 0, len(list))
	for _, a := range list {
		out = append(out, a.info(now))
	}
	return out
}

// info describes the allocation now.
func (a *allocation) info(now time.Time) AllocationInfo {
	h := a.hot.Load()
	i := AllocationInfo{
		ID: a.id, User: a.userID, Username: a.username, Client: a.client.String(), Transport: a.transport,
		Relay: a.relayAddr.String(), Created: a.created.UTC(), Permissions: len(h.perms), Channels: len(h.channels),
	}
	if exp, ok := CredentialExpiry(a.username); ok {
		i.ExpiresCredential = &exp
	}
	if left := time.Unix(0, a.expires.Load()).Sub(now); left > 0 {
		i.LifetimeLeftS = int64(left.Round(time.Second) / time.Second)
	}
	if a.conn != nil {
		c := a.conn.counts()
		i.BytesClientToPeer, i.PacketsClientToPeer = c.c2pBytes, c.c2pPackets
		i.BytesPeerToClient, i.PacketsPeerToClient = c.p2cBytes, c.p2cPackets
	}
	i.BPSClientToPeer, i.BPSPeerToClient = a.rateUp.Load(), a.rateDown.Load()
	return i
}

// EndAllocation ends the allocation with the given id now: its relay socket closes, pion
// deletes it (the client's next request gets 437) and the allocation log says reason.
// It reports whether there was such an allocation; it returns before pion has deleted
// it (Gone says when).
func (s *Server) EndAllocation(id, reason string) bool {
	return s.EndAllocations(func(a *AllocationInfo) bool { return a.ID == id }, reason) > 0
}

// EndAllocations ends every live allocation match accepts (given its id, user, username
// and credential expiry only) and returns how many.
func (s *Server) EndAllocations(match func(a *AllocationInfo) bool, reason string) int {
	t := s.allocs
	var conns []*relayConn
	t.mu.Lock()
	for _, a := range t.byKey {
		i := AllocationInfo{ID: a.id, User: a.userID, Username: a.username}
		if !match(&i) {
			continue
		}
		if a.ending == "" {
			a.ending = reason
		}
		if a.conn != nil {
			conns = append(conns, a.conn)
		}
	}
	t.mu.Unlock()
	// Closing the relay socket ends pion's read loop on it, which deletes the allocation
	// (pioncontract.go, item 5).
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// Gone reports whether no allocation with the given id is live any more.
func (s *Server) Gone(id string) bool {
	t := s.allocs
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.byKey {
		if a.id == id {
			return false
		}
	}
	return true
}

// rateEvery is how often each allocation's current rate is worked out.
const rateEvery = time.Second

// sampleRates works out every allocation's rate each way since the last sample.
func (s *Server) sampleRates(now time.Time) {
	t := s.allocs
	t.mu.Lock()
	list := make([]*allocation, 0, len(t.byKey))
	for _, a := range t.byKey {
		list = append(list, a)
	}
	t.mu.Unlock()
	for _, a := range list {
		if a.conn == nil {
			continue
		}
		c := a.conn.counts()
		a.rateMu.Lock()
		if dt := now.Sub(a.rateAt).Seconds(); dt > 0 {
			a.rateUp.Store(uint64(float64(c.c2pBytes-a.rateC2P) * 8 / dt))
			a.rateDown.Store(uint64(float64(c.p2cBytes-a.rateP2C) * 8 / dt))
		}
		a.rateAt, a.rateC2P, a.rateP2C = now, c.c2pBytes, c.p2cBytes
		a.rateMu.Unlock()
	}
}

// rates runs sampleRates every rateEvery until done is closed.
func (s *Server) rates(done <-chan struct{}) {
	tick := time.NewTicker(rateEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			s.sampleRates(now)
		}
	}
}

// refused tells the control of a refusal.
func (g *gate) refused(from netip.AddrPort, username []byte, reason string) {
	ctl := g.s.ctl
	if ctl == nil {
		return
	}
	name := shownUsername(username)
	ctl.Refused(Refusal{Time: time.Now().UTC(), Source: from.String(), Transport: g.transport,
		Method: methodName(g.msg.Type.Method.String()), User: userIDOf(name), Username: name, Reason: reason})
}

// methodName is a STUN method's name in lower case ("Allocate" -> "allocate").
func methodName(m string) string {
	switch m {
	case "CreatePermission":
		return "create_permission"
	case "ChannelBind":
		return "channel_bind"
	}
	return strings.ToLower(m)
}
