package cluster

import (
	"sync/atomic"
	"testing"
	"time"
)

// countPeer counts what it is sent.
type countPeer struct{ n atomic.Int64 }

func (p *countPeer) Send([]byte) bool { p.n.Add(1); return true }
func (p *countPeer) Close()           {}

// BenchmarkCrossNodeOffer: one OFFER-sized message from a peer on node 1 to a peer on
// node 2, as signaling routes it (Lookup, then Send), until node 2 has delivered all.
func BenchmarkCrossNodeOffer(b *testing.B) {
	s := startRedis(b)
	n1, n2 := node(b, s, "n1", 6*time.Second), node(b, s, "n2", 6*time.Second)
	dst := &countPeer{}
	if _, err := n2.Register("dst", "t", dst); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 3000)
	b.ResetTimer()
	for range b.N {
		if p := n1.Lookup("dst"); p == nil || !p.Send(msg) {
			b.Fatal("send failed")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for dst.n.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", dst.n.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
}
