// Package testpeer is the UDP peer that tests relay datagrams to: one socket on
// 127.0.0.1 and a goroutine that both end with the test.
package testpeer

import (
	"net"
	"testing"
)

// Echo starts a peer that sends every datagram back to where it came from.
func Echo(t testing.TB) *net.UDPAddr { return start(t, true) }

// Sink starts a peer that swallows every datagram, as a firewall that drops them would.
func Sink(t testing.TB) *net.UDPAddr { return start(t, false) }

func start(t testing.TB, echo bool) *net.UDPAddr {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if echo {
				_, _ = pc.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr)
}
