//go:build linux

// Package natlab is relay's NAT lab: real NATs on one machine, built from Linux network
// namespaces, veth pairs and iptables, with relay on a "public" network and WebRTC
// peers (pion/webrtc, speaking the PeerJS protocol to relay's signaling endpoint) in
// private home networks behind them. It proves what the product is for: STUN shows a
// peer behind a NAT its public address, peers behind friendly NATs connect directly, and
// when the NATs or a firewall are too strict, TURN carries the data.
//
// The lab needs root, ip (iproute2) and iptables; without them it skips, except in CI
// (CI=true) where it fails. It uses only addresses it creates inside its own namespaces
// (198.18.0.0/24 for the public side, 10.0.N.0/24 inside the homes) and no namespace
// has a link to the host's network. Namespaces are named rnl-*; a run removes the
// leftovers of a crashed run first and everything it built when it ends.
package natlab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/skipnote"
)

const (
	nsPrefix = "rnl-"           // every namespace of the lab
	pubNS    = nsPrefix + "pub" // the "internet": a bridge, relay on it
	relayIP  = "198.18.0.1"     // relay's public address (benchmarking range, RFC 2544)
	pubCIDR  = "198.18.0.0/24"  // the routers' WAN addresses are on it too
)

// natKind is how a home's router treats traffic.
type natKind string

const (
	// cone: MASQUERADE, endpoint-independent mapping (Linux keeps the source port) and
	// address-and-port-dependent filtering: a "port-restricted cone" NAT.
	cone natKind = "cone"
	// symmetric: MASQUERADE --random-fully, a fresh public port for every destination.
	symmetric natKind = "symmetric"
	// udpBlocked: a corporate firewall: cone NAT, but nothing leaves the network except
	// TCP to relay's TURN TCP/TLS ports and its signaling port.
	udpBlocked natKind = "udp-blocked"
)

// home is a private network behind its own NAT router.
type home struct {
	name   string
	kind   natKind
	router string // namespace of the NAT router
	ns     string // namespace of the home network (where peers run)
	wanIP  string // the router's public address: what STUN should report
	gwIP   string // the router's LAN address
	hostIP string // the peer's address in the home network
}

// lab is the topology; it is torn down by t.Cleanup.
type lab struct {
	t     *testing.T
	homes map[string]*home
}

// requireLab skips (locally, noted by skipnote) or fails (CI=true) when the lab cannot
// run here.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the NAT lab needs root (network namespaces, iptables)", "sudo go test ./e2e/natlab")
	}
	for _, c := range []struct{ bin, pkg string }{{"ip", "iproute2"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(c.bin); err != nil {
			skipnote.Skip(t, c.bin+" not found", "apt-get install "+c.pkg)
		}
	}
}

// lockLab serialises lab runs on this machine (two `go test ./...` at once would fight
// over the rnl-* namespaces); it waits up to two minutes.
func lockLab(t *testing.T) {
	t.Helper()
	lockFile := filepath.Join(os.TempDir(), "relay-natlab.lock")
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("lab lock: %v", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("another NAT lab run holds %s for over 2 minutes", lockFile)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() })
}

// run runs a command and fails the test if it fails.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs a command inside a namespace.
func in(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// labNamespaces lists the namespaces named rnl-*.
func labNamespaces() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// removeNamespaces kills the processes left in the lab's namespaces (by pid, as ip
// netns pids lists them) and deletes the namespaces, which destroys their veths.
func removeNamespaces(t testing.TB) {
	for _, ns := range labNamespaces() {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("removing namespace %s: %v %s", ns, err, out)
		}
	}
}

// newLab builds the public network and the homes: one router and one home namespace
// each, numbered from 1 (router WAN 198.18.0.(10+i), home network 10.0.i.0/24).
func newLab(t *testing.T, homes []*home) *lab {
	t.Helper()
	if left := labNamespaces(); len(left) > 0 {
		t.Logf("removing %d namespaces left by an earlier run: %s", len(left), strings.Join(left, " "))
		removeNamespaces(t)
	}
	l := &lab{t: t, homes: map[string]*home{}}
	t.Cleanup(func() { removeNamespaces(t) })

	addNS := func(name string) {
		run(t, "ip", "netns", "add", name)
		in(t, name, "ip", "link", "set", "lo", "up")
		// IPv4 only: no link-local IPv6 candidates to muddle the matrix.
		in(t, name, "sh", "-c", "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6; do [ -w $f ] && echo 1 > $f; done; true")
	}
	addNS(pubNS)
	run(t, "ip", "-n", pubNS, "link", "add", "wan0", "type", "bridge")
	run(t, "ip", "-n", pubNS, "addr", "add", relayIP+"/24", "dev", "wan0")
	run(t, "ip", "-n", pubNS, "link", "set", "wan0", "up")

	for i, h := range homes {
		n := i + 1
		h.router, h.ns = nsPrefix+"r-"+h.name, nsPrefix+"h-"+h.name
		h.wanIP = fmt.Sprintf("198.18.0.%d", 10+n)
		h.gwIP = fmt.Sprintf("10.0.%d.1", n)
		h.hostIP = fmt.Sprintf("10.0.%d.2", n)
		addNS(h.router)
		addNS(h.ns)
		// WAN: router "wan" <-> bridge port in the public namespace.
		port := "w-" + h.name
		run(t, "ip", "link", "add", "wan", "netns", h.router, "type", "veth", "peer", "name", port, "netns", pubNS)
		run(t, "ip", "-n", pubNS, "link", "set", port, "master", "wan0")
		run(t, "ip", "-n", pubNS, "link", "set", port, "up")
		run(t, "ip", "-n", h.router, "addr", "add", h.wanIP+"/24", "dev", "wan")
		run(t, "ip", "-n", h.router, "link", "set", "wan", "up")
		// LAN: router "lan" <-> home "eth0".
		run(t, "ip", "link", "add", "lan", "netns", h.router, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		run(t, "ip", "-n", h.router, "addr", "add", h.gwIP+"/24", "dev", "lan")
		run(t, "ip", "-n", h.router, "link", "set", "lan", "up")
		run(t, "ip", "-n", h.ns, "addr", "add", h.hostIP+"/24", "dev", "eth0")
		run(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", h.ns, "route", "add", "default", "via", h.gwIP)
		in(t, h.router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
		l.natRules(h)
		l.homes[h.name] = h
	}
	return l
}

// natRules makes the router a NAT of its kind. Every router drops unsolicited inbound
// traffic, as home routers do; dropping it before conntrack confirms the entry also
// keeps a peer's early hole-punching packet from occupying the mapping the home is
// about to create.
func (l *lab) natRules(h *home) {
	ipt := func(args ...string) { in(l.t, h.router, append([]string{"iptables", "-w"}, args...)...) }
	ipt("-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	ipt("-A", "INPUT", "-i", "wan", "-j", "DROP")
	ipt("-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	ipt("-A", "FORWARD", "-i", "wan", "-j", "DROP")
	switch h.kind {
	case cone, udpBlocked:
		ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
	case symmetric:
		ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", "--random-fully")
	default:
		l.t.Fatalf("unknown NAT kind %q", h.kind)
	}
	if h.kind == udpBlocked {
		ipt("-A", "FORWARD", "-i", "lan", "-p", "tcp", "-d", relayIP, "-m", "multiport",
			"--dports", fmt.Sprintf("%d,%d,%d", turnPort, turnsPort, signalPort), "-j", "ACCEPT")
		ipt("-A", "FORWARD", "-i", "lan", "-j", "DROP")
	}
}

// conntrackEntry is one connection the router tracks: the home's side and the public
// side of a mapping.
type conntrackEntry struct {
	proto                string
	src, dst             string // original direction, as the home sent it
	sport, dport         int
	replySrc, replyDst   string // reply direction: replyDst:replyDport is the public mapping
	replySport, replyDpt int
}

func (e conntrackEntry) mapping() string { return fmt.Sprintf("%s:%d", e.replyDst, e.replyDpt) }

// conntrack reads the router's connection table.
func (l *lab) conntrack(h *home) []conntrackEntry {
	out := in(l.t, h.router, "cat", "/proc/net/nf_conntrack")
	var entries []conntrackEntry
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "ipv4" {
			continue
		}
		e := conntrackEntry{proto: f[2]}
		var srcs, dsts []string
		var sports, dports []int
		for _, kv := range f {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			switch k {
			case "src":
				srcs = append(srcs, v)
			case "dst":
				dsts = append(dsts, v)
			case "sport":
				p, _ := strconv.Atoi(v)
				sports = append(sports, p)
			case "dport":
				p, _ := strconv.Atoi(v)
				dports = append(dports, p)
			}
		}
		if len(srcs) != 2 || len(dsts) != 2 || len(sports) != 2 || len(dports) != 2 {
			continue
		}
		e.src, e.dst, e.sport, e.dport = srcs[0], dsts[0], sports[0], dports[0]
		e.replySrc, e.replyDst, e.replySport, e.replyDpt = srcs[1], dsts[1], sports[1], dports[1]
		entries = append(entries, e)
	}
	return entries
}
