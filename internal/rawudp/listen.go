package rawudp

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenShards opens n UDP sockets on one address with SO_REUSEPORT, so that the kernel
// spreads clients over them (by 4-tuple hash: one client always lands on one socket) and
// one address uses every core; each asks for buffer bytes of kernel buffer (TuneBuffers).
// network is "udp", "udp4" or "udp6". Port 0 binds the first socket to a free port and
// the others to the same one.
//
// SO_REUSEPORT would let another process of the same user join a fixed port silently and
// take a share of the clients, so a plain bind first makes sure the port is free.
func ListenShards(network, addr string, n, buffer int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		probe, err := net.ListenPacket(network, addr)
		if err != nil {
			return nil, err
		}
		_ = probe.Close()
	}
	var conns []*net.UDPConn
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(context.Background(), network, addr)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, err
		}
		u := pc.(*net.UDPConn)
		TuneBuffers(u, buffer)
		conns = append(conns, u)
		if i == 0 {
			addr = u.LocalAddr().String()
		}
	}
	return conns, nil
}
