//go:build linux

package main

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/internal/rawudp"
)

// restCredentials mints TURN REST credentials, as relay and coturn
// (--use-auth-secret) both accept them: username "<unix-expiry>:<user>", password
// base64(HMAC-SHA1(secret, username)).
func restCredentials(secret, user string, ttl time.Duration) (username, password string) {
	username = strconv.FormatInt(time.Now().Add(ttl).Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// packetIO is a client socket as the control transactions see it: a Go UDP socket
// (setup-rate and memory phases, many concurrent clients on the netpoller) or a raw
// non-blocking descriptor (the traffic phase, whose sockets the event loop owns).
type packetIO interface {
	Write(b []byte) (int, error)
	// ReadTimeout reads one datagram, waiting at most d; errTimeout when none came.
	ReadTimeout(b []byte, d time.Duration) (int, error)
}

var errTimeout = errors.New("timeout")

type goUDP struct{ c *net.UDPConn }

func (g goUDP) Write(b []byte) (int, error) { return g.c.Write(b) }

func (g goUDP) ReadTimeout(b []byte, d time.Duration) (int, error) {
	_ = g.c.SetReadDeadline(time.Now().Add(d))
	n, err := g.c.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errTimeout
	}
	return n, err
}

type rawUDP struct{ c *rawudp.Conn }

func (r rawUDP) Write(b []byte) (int, error) { return r.c.Write(b) }

func (r rawUDP) ReadTimeout(b []byte, d time.Duration) (int, error) {
	n, err := r.c.ReadTimeout(b, d)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errTimeout
	}
	return n, err
}

// turnSession is one client's allocation, driven by hand-built STUN messages so that
// the generator is the same for every server (no client library quirks in the way).
type turnSession struct {
	io          packetIO
	user, pass  string
	realm       string
	nonce       string
	integrity   stun.MessageIntegrity
	relayed     netip.AddrPort
	buf         []byte
	retransmits int
}

func newTurnSession(io packetIO, user, pass string) *turnSession {
	return &turnSession{io: io, user: user, pass: pass, buf: make([]byte, 1500)}
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

func peerAddress(a netip.AddrPort) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: a.Addr().AsSlice(), Port: int(a.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

var udpTransport = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

func channelNumber(ch uint16) stun.Setter {
	return stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(ch >> 8), byte(ch), 0, 0}}
}

func lifetime(d time.Duration) stun.Setter {
	s := uint32(d / time.Second)
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}}
}

// request sends one authenticated request (retransmitting on loss, RFC 8489 style) and
// returns the success response. A 401 or 438 (stale nonce) answer updates realm and
// nonce and the request is sent again once, which is the normal first-Allocate dance.
func (t *turnSession) request(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for try := 0; try < 2; try++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if t.nonce != "" {
			setters = append(setters, stun.NewUsername(t.user), stun.NewRealm(t.realm), stun.NewNonce(t.nonce), t.integrity)
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			return nil, err
		}
		resp, err := t.roundTrip(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if resp.Type.Class == stun.ClassSuccessResponse {
			return resp, nil
		}
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(resp)
		if (code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) && try == 0 {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(resp) == nil {
				t.realm = realm.String()
			}
			if nonce.GetFrom(resp) == nil {
				t.nonce = nonce.String()
			}
			t.integrity = stun.NewLongTermIntegrity(t.user, t.realm, t.pass)
			continue
		}
		return nil, fmt.Errorf("%s: error %d %s", method, code.Code, code.Reason)
	}
	return nil, fmt.Errorf("%s: still unauthorized after the nonce dance", method)
}

// roundTrip retransmits after 500 ms, then 1, 2, 4 s, and gives up after 5 tries (a
// busy server queues hundreds of concurrent requests: a shorter first timeout would
// retransmit what is merely waiting).
func (t *turnSession) roundTrip(req *stun.Message) (*stun.Message, error) {
	rto := 500 * time.Millisecond
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			t.retransmits++
		}
		if _, err := t.io.Write(req.Raw); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		deadline := time.Now().Add(rto)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			n, err := t.io.ReadTimeout(t.buf, left)
			if errors.Is(err, errTimeout) {
				break
			}
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue
				}
				return nil, err
			}
			if n < 20 || t.buf[0]&0xC0 != 0 || !stun.IsMessage(t.buf[:n]) {
				continue // ChannelData or noise
			}
			resp := &stun.Message{Raw: append([]byte(nil), t.buf[:n]...)}
			if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
				continue
			}
			return resp, nil
		}
		rto *= 2
	}
	return nil, errors.New("no response after 5 tries")
}

func (t *turnSession) allocate() error {
	resp, err := t.request(stun.MethodAllocate, udpTransport)
	if err != nil {
		return err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return fmt.Errorf("Allocate: no XOR-RELAYED-ADDRESS: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	t.relayed = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return nil
}

func (t *turnSession) createPermission(peer netip.AddrPort) error {
	_, err := t.request(stun.MethodCreatePermission, peerAddress(peer))
	return err
}

func (t *turnSession) channelBind(ch uint16, peer netip.AddrPort) error {
	_, err := t.request(stun.MethodChannelBind, channelNumber(ch), peerAddress(peer))
	return err
}

func (t *turnSession) refresh(d time.Duration) error {
	_, err := t.request(stun.MethodRefresh, lifetime(d))
	return err
}

// setup is what the allocation setup rate counts: Allocate (with its 401 dance),
// CreatePermission and ChannelBind to peer.
func (t *turnSession) setup(ch uint16, peer netip.AddrPort) error {
	if err := t.allocate(); err != nil {
		return err
	}
	if err := t.createPermission(peer); err != nil {
		return err
	}
	return t.channelBind(ch, peer)
}
