//go:build linux

package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A route is the way to an address as the kernel's routing table says at the time:
// local (delivered on this host), or out of an interface. The program needs it because
// it cannot ask the FIB itself without IP forwarding enabled (bpf_fib_lookup refuses
// then), which a TURN server has no other reason to turn on.
type route struct {
	local   bool
	ifindex uint32 // 0 when local
	mtu     uint32
}

// routes asks the kernel (RTM_GETROUTE over rtnetlink) and keeps the answers for a
// while: channels to one peer, or from one client, are bound in bursts.
type routes struct {
	mu    sync.Mutex
	fd    int
	seq   uint32
	cache map[[2]netip.Addr]cachedRoute
	mtus  map[uint32]uint32
}

type cachedRoute struct {
	r   route
	err error
	at  time.Time
}

// routeTTL is how long an answer is reused. A route that changes later keeps channels
// bound before the change on the old way until they are bound again (pion refreshes a
// binding without telling; a new binding, or a new allocation, takes the new route).
const routeTTL = 10 * time.Second

func newRoutes() (*routes, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink bind: %w", err)
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &routes{fd: fd, cache: map[[2]netip.Addr]cachedRoute{}, mtus: map[uint32]uint32{}}, nil
}

func (r *routes) close() { unix.Close(r.fd) }

// lookup is the route from src (zero: any) to dst.
func (r *routes) lookup(src, dst netip.Addr) (route, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := [2]netip.Addr{src, dst}
	if c, ok := r.cache[key]; ok && time.Since(c.at) < routeTTL {
		return c.r, c.err
	}
	if len(r.cache) > 4096 {
		clear(r.cache)
	}
	rt, err := r.ask(src, dst)
	if err == nil && !rt.local {
		rt.mtu, err = r.mtu(rt.ifindex)
	}
	r.cache[key] = cachedRoute{r: rt, err: err, at: time.Now()}
	return rt, err
}

func (r *routes) mtu(ifindex uint32) (uint32, error) {
	if m, ok := r.mtus[ifindex]; ok {
		return m, nil
	}
	ifc, err := net.InterfaceByIndex(int(ifindex))
	if err != nil {
		return 0, err
	}
	r.mtus[ifindex] = uint32(ifc.MTU)
	return uint32(ifc.MTU), nil
}

var errNoRoute = errors.New("no unicast route")

// ask sends one RTM_GETROUTE and reads its answer.
func (r *routes) ask(src, dst netip.Addr) (route, error) {
	r.seq++
	attrs := attr(nil, unix.RTA_DST, dst.AsSlice())
	srcLen := uint8(0)
	if src.IsValid() && !src.IsUnspecified() {
		attrs = attr(attrs, unix.RTA_SRC, src.AsSlice())
		srcLen = 32
	}
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofRtMsg, unix.SizeofNlMsghdr+unix.SizeofRtMsg+len(attrs))
	msg = append(msg, attrs...)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], unix.RTM_GETROUTE)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:12], r.seq)
	rtm := msg[unix.SizeofNlMsghdr:]
	rtm[0] = unix.AF_INET // family
	rtm[1] = 32           // dst_len
	rtm[2] = srcLen
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return route{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			return route{}, fmt.Errorf("route to %s: %w", dst, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return route{}, fmt.Errorf("route to %s: %w", dst, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != r.seq {
				continue // an answer to an earlier question that timed out
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data[0:4])); e != 0 {
						return route{}, fmt.Errorf("route to %s: %w", dst, unix.Errno(-e))
					}
				}
				return route{}, fmt.Errorf("route to %s: %w", dst, errNoRoute)
			case unix.RTM_NEWROUTE:
				return parseRoute(m, dst)
			}
		}
	}
}

func parseRoute(m syscall.NetlinkMessage, dst netip.Addr) (route, error) {
	if len(m.Data) < unix.SizeofRtMsg {
		return route{}, fmt.Errorf("route to %s: short answer", dst)
	}
	typ := m.Data[7] // rtm_type
	attrs, err := syscall.ParseNetlinkRouteAttr(&m)
	if err != nil {
		return route{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	switch typ {
	case unix.RTN_LOCAL:
		return route{local: true}, nil
	case unix.RTN_UNICAST:
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				return route{ifindex: binary.NativeEndian.Uint32(a.Value)}, nil
			}
		}
	}
	return route{}, fmt.Errorf("route to %s: %w", dst, errNoRoute)
}

func attr(b []byte, typ uint16, v []byte) []byte {
	l := unix.SizeofRtAttr + len(v)
	h := make([]byte, unix.SizeofRtAttr)
	binary.NativeEndian.PutUint16(h[0:2], uint16(l))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h...)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
