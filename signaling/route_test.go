package signaling

import (
	"net/netip"
	"testing"

	"github.com/relayproject/relay/config"
)

// offerMessage is an OFFER as a PeerJS 1.5 client sends it, about 650 bytes.
var offerMessage = []byte(`{"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Bx3f\r\na=ice-pwd:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\na=ice-options:trickle\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"},"type":"data","connectionId":"dc_8fj3kd92ls","label":"dc_8fj3kd92ls","metadata":null,"reliable":false,"serialization":"binary"},"dst":"0b9f6c1e-2a4d-4c8e-9f3a-7d5e1b2c3a4f"}`)

// sinkPeer takes every message and drops it.
type sinkPeer struct{ n int }

func (p *sinkPeer) Send([]byte) bool { p.n++; return true }
func (p *sinkPeer) Close()           {}

// BenchmarkRoute is one OFFER through the server's message handling: parse, rebuild
// with the sender's id, look up the destination and hand it over.
func BenchmarkRoute(b *testing.B) {
	s := startSignal(b, nil)
	sink := &sinkPeer{}
	if _, err := s.reg.Register("0b9f6c1e-2a4d-4c8e-9f3a-7d5e1b2c3a4f", "t", sink); err != nil {
		b.Fatal(err)
	}
	sender := newPeer(s.Server, nil, "5e7d2c9a-1b3f-4a6e-8d0c-2f4b6a8c0e1d", "t", netip.Addr{})
	b.ReportAllocs()
	b.SetBytes(int64(len(offerMessage)))
	for b.Loop() {
		s.handle(sender, offerMessage)
	}
	if sink.n != b.N {
		b.Fatalf("%d of %d routed", sink.n, b.N)
	}
}

// BenchmarkFrameAndRoute adds the frame reader: a masked frame in, unmasked in place.
func BenchmarkFrameAndRoute(b *testing.B) {
	s := startSignal(b, func(c *config.Signal) { c.MessagesPerSecond = 1 << 30 })
	sink := &sinkPeer{}
	if _, err := s.reg.Register("0b9f6c1e-2a4d-4c8e-9f3a-7d5e1b2c3a4f", "t", sink); err != nil {
		b.Fatal(err)
	}
	sender := newPeer(s.Server, nil, "5e7d2c9a-1b3f-4a6e-8d0c-2f4b6a8c0e1d", "t", netip.Addr{})
	frame := clientFrame(true, opText, offerMessage, true)
	buf := make([]byte, len(frame))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(buf, frame)
		sender.c.Feed(buf)
	}
	if sink.n != b.N {
		b.Fatalf("%d of %d routed", sink.n, b.N)
	}
}
