//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package offload

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestRedirect: the way out through another interface (bpf_redirect_neigh). A client in
// one network namespace and a peer in another reach the relay's addresses over veth
// pairs; ChannelData from the client leaves towards the peer's interface, the answer
// towards the client's, each resolved by the routing table and ARP, with checksums the
// receiving stack verifies (the senders are raw sockets: CHECKSUM_NONE, as a NIC
// delivers, not the CHECKSUM_PARTIAL of a local sender, which stays in userspace).
func TestRedirect(t *testing.T) {
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "network namespaces and the kernel data path need root", "sudo go test ./internal/offload")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipnote.Skip(t, "ip (iproute2) not found", "apt-get install iproute2")
	}
	id := os.Getpid() % 100000
	nsA, nsB := fmt.Sprintf("rof-a-%d", id), fmt.Sprintf("rof-b-%d", id)
	vA, vB := fmt.Sprintf("rofa%d", id), fmt.Sprintf("rofb%d", id)
	// Addresses from the benchmarking range (198.18.0.0/15), which no real network uses.
	local, client := netip.MustParseAddr("198.19.250.1"), netip.MustParseAddr("198.19.250.2")
	relayIP, peerIP := netip.MustParseAddr("198.19.250.5"), netip.MustParseAddr("198.19.250.6")
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	for _, ns := range []string{nsA, nsB} {
		_ = exec.Command("ip", "netns", "del", ns).Run() // a crashed run's
		ip("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() }) // takes its veth along
	}
	for _, l := range []struct {
		ns, veth    string
		here, there netip.Addr
	}{{nsA, vA, local, client}, {nsB, vB, relayIP, peerIP}} {
		ip("link", "add", l.veth, "type", "veth", "peer", "name", "eth0", "netns", l.ns)
		ip("addr", "add", l.here.String()+"/30", "dev", l.veth)
		ip("link", "set", l.veth, "up")
		ip("-n", l.ns, "addr", "add", l.there.String()+"/30", "dev", "eth0")
		ip("-n", l.ns, "link", "set", "eth0", "up")
		ip("-n", l.ns, "link", "set", "lo", "up")
	}

	listener := udpOn(t, "", netip.AddrPortFrom(local, 0))
	relay := udpOn(t, "", netip.AddrPortFrom(relayIP, 0))
	cl := udpOn(t, nsA, netip.AddrPortFrom(client, 0))
	peer := udpOn(t, nsB, netip.AddrPortFrom(peerIP, 0))
	rawA, rawB := rawOn(t, nsA), rawOn(t, nsB)
	rp := ap(relay).Port()
	d := openOrSkip(t, Config{
		Listeners: []netip.AddrPort{ap(listener)}, RelayIP: relayIP, RelayPorts: [2]uint16{rp, rp},
		Interfaces: []string{vA, vB}, Channels: 4, Permissions: 4, Buckets: 4,
	})
	ch := Channel{Alloc: 1, Client: ap(cl), Local: ap(listener), Relay: ap(relay), Peer: ap(peer), Number: 0x4000}
	if err := d.SetPermission(ch.Alloc, peerIP); err != nil {
		t.Fatal(err)
	}
	if err := d.AddChannel(ch); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1, 160, 1001} {
		msg := bytes.Repeat([]byte{byte(i + 1), 0x5a}, n)[:n]
		sendRaw(t, rawA, ch.Client, ch.Local, channelData(ch.Number, msg))
		if got, from := read(t, peer, 2*time.Second); !bytes.Equal(got, msg) || from != ch.Relay {
			t.Fatalf("%d bytes to the peer: got %d bytes from %v", n, len(got), from)
		}
		sendRaw(t, rawB, ch.Peer, ch.Relay, msg)
		if got, from := read(t, cl, 2*time.Second); !bytes.Equal(got, channelData(ch.Number, msg)) || from != ch.Local {
			t.Fatalf("%d bytes to the client: got %d bytes from %v", n, len(got), from)
		}
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ToPeerPackets != 3 || st.ToClientPackets != 3 || st.Punted != 0 {
		t.Errorf("stats %+v: want 3 each way through the kernel, none left to userspace", st)
	}
	for _, c := range []*net.UDPConn{listener, relay} {
		if got, _ := read(t, c, 50*time.Millisecond); got != nil {
			t.Errorf("relay's socket %v got %x", ap(c), got)
		}
	}

	// From an ordinary socket the veth passes the datagram on CHECKSUM_PARTIAL (the
	// sender's checksum offload): its offsets would point into the moved headers on the
	// way out, so it reaches relay's listener untouched, for the userspace path.
	cd := channelData(ch.Number, []byte("partial"))
	if _, err := cl.WriteToUDPAddrPort(cd, ch.Local); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, listener, 2*time.Second); !bytes.Equal(got, cd) {
		t.Errorf("a CHECKSUM_PARTIAL datagram: the listener got %x, want it untouched", got)
	}
	if st, _ := d.Stats(); st.Punted != 1 {
		t.Errorf("stats %+v: want the CHECKSUM_PARTIAL datagram left to userspace", st)
	}
}

// inNS runs f with the calling thread in network namespace ns ("" for this one):
// sockets made there stay there.
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	if ns == "" {
		f()
		return
	}
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	f()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		t.Fatal(err) // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
}

func udpOn(t *testing.T, ns string, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	inNS(t, ns, func() { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(at)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawOn(t *testing.T, ns string) int {
	t.Helper()
	var fd int
	var err error
	inNS(t, ns, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func sendRaw(t *testing.T, fd int, from, to netip.AddrPort, payload []byte) {
	t.Helper()
	if err := unix.Sendto(fd, rawUDP(from, to, payload), 0, &unix.SockaddrInet4{Addr: to.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
}
