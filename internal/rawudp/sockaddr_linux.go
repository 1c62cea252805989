//go:build linux

package rawudp

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Family is the address family of a socket, which decides how a destination is written
// into a message: an IPv4 client of a dual-stack IPv6 socket is ::ffff:a.b.c.d.
type Family uint8

const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

// FamilyOf returns the address family of a UDP socket (IPv6 when it cannot tell).
func FamilyOf(u *net.UDPConn) Family {
	family := IPv6
	if rc, err := u.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
				family = Family(d)
			}
		})
	}
	return family
}

// putSockaddr4 writes to as a sockaddr_in. The port is in network byte order, which the
// struct's uint16 field cannot say: write its two bytes.
func putSockaddr4(sa *unix.RawSockaddrInet4, to netip.AddrPort) {
	sa.Family = unix.AF_INET
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	sa.Addr = to.Addr().As4()
}

// putSockaddr writes to into sa as an address of family f and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, f Family) uint32 {
	if f == IPv4 {
		putSockaddr4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)), to)
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: to.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	return unix.SizeofSockaddrInet6
}

// addrPortOf reads a source address the kernel wrote (IPv4-mapped IPv6 unmapped).
func addrPortOf(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// TuneBuffers raises a socket's kernel buffers to size bytes each way: past
// net.core.rmem_max/wmem_max when the process may (CAP_NET_ADMIN), else as far as those
// limits allow.
func TuneBuffers(u *net.UDPConn, size int) {
	rc, err := u.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { tuneFD(int(fd), size) })
}

func tuneFD(fd, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
	}
}
