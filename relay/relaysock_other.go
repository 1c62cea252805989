//go:build !linux

package relay

import (
	"net"
	"net/netip"
	"sync"
)

// relaySock is a relay socket read by a goroutine of its own where epoll is not
// available.
type relaySock struct {
	u *net.UDPConn
}

func (s *relaySock) open(ps *pollers, c *relayConn, addr netip.AddrPort) error {
	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	s.u = u
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		var buf [relayBufSize]byte
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf[channelDataHdrSize : relayBufSize-3])
			if err != nil {
				return
			}
			if n == relayBufSize-channelDataHdrSize-3 {
				c.r.s.dropped[dropMalformedIdx].Inc() // filled the buffer: probably cut short
				continue
			}
			c.received(buf[:], n, from, nil)
		}
	}()
	return nil
}

func (s *relaySock) sendTo(b []byte, to netip.AddrPort) (int, error) {
	return s.u.WriteToUDPAddrPort(b, to)
}

func (s *relaySock) close() error { return s.u.Close() }

// pollers only waits for the per-socket readers here.
type pollers struct{ wg sync.WaitGroup }

func newPollers() *pollers { return &pollers{} }

func (ps *pollers) stop() { ps.wg.Wait() }
