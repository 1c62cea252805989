package relay

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

type nopReplier struct{ n int }

func (r *nopReplier) reply(b []byte, _ netip.AddrPort) { r.n += len(b) }

// BenchmarkGateBinding measures answering one STUN Binding request (parse, build the
// response with XOR-MAPPED-ADDRESS, MAPPED-ADDRESS and FINGERPRINT), without the socket.
func BenchmarkGateBinding(b *testing.B) {
	s := startServer(b, nil)
	g := newGate(s.Server, "udp", netip.MustParseAddrPort("127.0.0.1:3478"), false)
	req := mustBuild(b, stun.BindingRequest).Raw
	from := netip.MustParseAddrPort("198.51.100.9:40000")
	rep := &nopReplier{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if g.inspect(req, from, rep) {
			b.Fatal("Binding passed to pion")
		}
	}
}

func TestGateBindingAllocationFree(t *testing.T) {
	s := startServer(t, nil)
	g := newGate(s.Server, "udp", netip.MustParseAddrPort("127.0.0.1:3478"), false)
	req := mustBuild(t, stun.BindingRequest).Raw
	from := netip.MustParseAddrPort("198.51.100.9:40000")
	rep := &nopReplier{}
	if n := testing.AllocsPerRun(200, func() { g.inspect(req, from, rep) }); n != 0 {
		t.Fatalf("answering a Binding request allocates %v times", n)
	}
}

func (r *nopReplier) sendChannelData(b []byte, _ netip.AddrPort) error { r.n += len(b); return nil }
