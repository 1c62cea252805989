package check

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/stun/v3"
)

// stunError is an error response: the server's ERROR-CODE, verbatim.
type stunError struct {
	Method    stun.Method
	Code      int
	Reason    string
	Alternate string // ALTERNATE-SERVER of a 300
}

func (e *stunError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("%d", e.Code)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Reason)
}

// responseError is nil for a success response, else the *stunError it carries.
func responseError(m *stun.Message) error {
	if m.Type.Class != stun.ClassErrorResponse {
		return nil
	}
	e := &stunError{Method: m.Type.Method}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		e.Reason = "(error response without ERROR-CODE)"
		return e
	}
	e.Code, e.Reason = int(ec.Code), string(ec.Reason)
	if e.Code == int(stun.CodeTryAlternate) {
		var alt stun.MappedAddress
		if alt.GetFromAs(m, stun.AttrAlternateServer) == nil {
			e.Alternate = alt.String()
		}
	}
	return e
}

// credentials for TURN long-term authentication.
type credentials struct{ username, password string }

// session is one TURN allocation on one client connection.
type session struct {
	c                      *stunConn
	creds                  credentials
	realm, nonce           string
	integrity              stun.MessageIntegrity
	anonymous              bool // the server allocated without asking for credentials
	relayed                *net.UDPAddr
	lifetime               time.Duration
	allocated, permissions bool
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

func requestedUDP() stun.Setter { return rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}} }

func lifetimeAttr(d time.Duration) stun.Setter {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	return rawAttr{stun.AttrLifetime, v}
}

func peerAttr(a *net.UDPAddr) stun.Setter {
	return peerSetter{stun.XORMappedAddress{IP: a.IP, Port: a.Port}}
}

type peerSetter struct{ a stun.XORMappedAddress }

func (p peerSetter) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

// errNoChallenge: a 401 without the REALM and NONCE of a long-term credential challenge.
var errNoChallenge = errors.New("no REALM and NONCE in the 401")

// allocate asks for a UDP relay: once without credentials to learn REALM and NONCE from
// the 401, then with them.
func (s *session) allocate(ctx context.Context) error {
	typ := stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	m, err := stun.Build(stun.TransactionID, typ, requestedUDP(), stun.Fingerprint)
	if err != nil {
		return err
	}
	res, err := s.c.roundTrip(ctx, m)
	if err != nil {
		return err
	}
	if err := responseError(res); err != nil {
		var se *stunError
		if !errors.As(err, &se) || se.Code != int(stun.CodeUnauthorized) {
			return err
		}
		var realm stun.Realm
		var nonce stun.Nonce
		if realm.GetFrom(res) != nil || nonce.GetFrom(res) != nil {
			return fmt.Errorf("%w: %w", se, errNoChallenge)
		}
		s.realm, s.nonce = realm.String(), nonce.String()
		s.integrity = stun.NewLongTermIntegrity(s.creds.username, s.realm, s.creds.password)
		if res, err = s.request(ctx, typ, requestedUDP()); err != nil {
			return err
		}
	} else {
		s.anonymous = true
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return explainedf("the Allocate response has no XOR-RELAYED-ADDRESS: not a TURN server?")
	}
	s.relayed = &net.UDPAddr{IP: relayed.IP, Port: relayed.Port}
	if v, err := res.Get(stun.AttrLifetime); err == nil && len(v) == 4 {
		s.lifetime = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	s.allocated = true
	return nil
}

// request sends an authenticated request and returns its success response, or the
// *stunError of its error response. A 438 (Stale Nonce) is retried with the new nonce.
func (s *session) request(ctx context.Context, typ stun.MessageType, setters ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; ; attempt++ {
		all := append([]stun.Setter{stun.TransactionID, typ}, setters...)
		if !s.anonymous {
			all = append(all, stun.NewUsername(s.creds.username), stun.NewRealm(s.realm),
				stun.NewNonce(s.nonce), s.integrity)
		}
		m, err := stun.Build(append(all, stun.Fingerprint)...)
		if err != nil {
			return nil, err
		}
		res, err := s.c.roundTrip(ctx, m)
		if err != nil {
			return nil, err
		}
		err = responseError(res)
		var se *stunError
		if errors.As(err, &se) && se.Code == int(stun.CodeStaleNonce) && attempt < 2 {
			var nonce stun.Nonce
			if nonce.GetFrom(res) == nil {
				s.nonce = nonce.String()
				continue
			}
		}
		return res, err
	}
}

// createPermission installs a permission for each peer's IP.
func (s *session) createPermission(ctx context.Context, peers ...*net.UDPAddr) error {
	setters := make([]stun.Setter, 0, len(peers))
	for _, p := range peers {
		setters = append(setters, peerAttr(p))
	}
	_, err := s.request(ctx, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), setters...)
	if err == nil {
		s.permissions = true
	}
	return err
}

// send relays payload to peer in a Send indication (no response).
func (s *session) send(peer *net.UDPAddr, payload []byte) error {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(peer), rawAttr{stun.AttrData, payload}, stun.Fingerprint)
	if err != nil {
		return err
	}
	return s.c.write(m.Raw)
}

// release deletes the allocation: Refresh with LIFETIME 0.
func (s *session) release(ctx context.Context) error {
	_, err := s.request(ctx, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0))
	s.allocated = false
	return err
}
