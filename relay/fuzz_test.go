package relay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/auth"
)

// FuzzGateInspect feeds arbitrary datagrams to the gate, as they would arrive on a UDP
// listener: it must never panic, never read past the datagram, and never pass a
// ChannelData message to pion.
func FuzzGateInspect(f *testing.F) {
	s := startServer(f, nil)
	user, pass := s.creds(f, "fuzz")
	key := auth.LongTermKey(user, testRealm, pass)
	for _, seed := range [][]byte{
		mustBuild(f, stun.BindingRequest).Raw,
		mustBuild(f, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()).Raw,
		mustBuild(f, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(), lifetime(2*time.Hour),
			stun.NewUsername(user), stun.NewRealm(testRealm), stun.NewNonce("n"), stun.MessageIntegrity(key), stun.Fingerprint).Raw,
		mustBuild(f, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{netip.MustParseAddrPort("127.0.0.1:1")}).Raw,
		mustBuild(f, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{netip.MustParseAddrPort("8.8.8.8:53")}).Raw,
		{0x40, 0x01, 0x00, 0x04, 'a', 'b', 'c', 'd'},
		{0x40, 0x01, 0xff, 0xff, 'a'},
		{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42},
	} {
		f.Add(seed)
	}
	g := newGate(s.Server, "udp", netip.MustParseAddrPort("127.0.0.1:3478"), false)
	rep := &nopReplier{}
	from := netip.MustParseAddrPort("198.51.100.1:5000")
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		pass := g.inspect(in, from, rep)
		if pass && isChannelData(b) {
			t.Fatal("ChannelData passed to pion")
		}
	})
}

// FuzzStreamFrame checks the TCP/TLS framer on arbitrary bytes.
func FuzzStreamFrame(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42})
	f.Add([]byte{0xC0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := streamFrameSize(b)
		if err == nil && n != 0 && n < channelDataHdrSize {
			t.Fatalf("frame of %d bytes", n)
		}
	})
}

// FuzzWireParsers runs the hand-written parsers of outgoing and incoming messages.
func FuzzWireParsers(f *testing.F) {
	f.Add(mustBuild(f, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse), stun.CodeUnauthorized).Raw, uint32(600))
	f.Add(mustBuild(f, stun.NewType(stun.MethodData, stun.ClassIndication), stun.RawAttribute{Type: stun.AttrData, Value: []byte("x")}).Raw, uint32(1))
	f.Add(mustBuild(f, stun.NewType(stun.MethodRefresh, stun.ClassSuccessResponse), stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 88}}).Raw, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, secs uint32) {
		relayedPayload(b)
		allocateErrorCode(b)
		responseClass(b)
		responseLifetime(b)
		var txid [12]byte
		decodeXORAddress(b, txid)
		c := append([]byte(nil), b...)
		if len(c) >= stunHeaderSize {
			binary.BigEndian.PutUint16(c[2:4], uint16(len(c)-stunHeaderSize))
		}
		clampLifetime(c, secs, []byte("key"))
		if len(c) != len(b) {
			t.Fatal("clampLifetime changed the length")
		}
	})
}
