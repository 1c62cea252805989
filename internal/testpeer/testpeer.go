// Package testpeer is the UDP peer that tests relay datagrams to: one socket on
// 127.0.0.1 (or ::1) and a goroutine that both end with the test.
package testpeer

import (
	"net"
	"testing"
)

// Echo starts a peer that sends every datagram back to where it came from.
func Echo(t testing.TB) *net.UDPAddr { return start(t, true, net.IPv4(127, 0, 0, 1)) }

// Echo6 is Echo on ::1.
func Echo6(t testing.TB) *net.UDPAddr { return start(t, true, net.IPv6loopback) }

// Sink starts a peer that swallows every datagram, as a firewall that drops them would.
func Sink(t testing.TB) *net.UDPAddr { return start(t, false, net.IPv4(127, 0, 0, 1)) }

func start(t testing.TB, echo bool, ip net.IP) *net.UDPAddr {
	t.Helper()
	network := "udp4"
	if ip.To4() == nil {
		network = "udp6"
	}
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
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
