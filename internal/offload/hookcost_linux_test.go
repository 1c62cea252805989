//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package offload

import (
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/relayproject/relay/internal/rawudp"
)

// BenchmarkHookOnLo: what merely having a program on lo's receive path costs per
// datagram, for the hooks the data path could use: none, tcx ingress (what it uses), and
// XDP, which lo only has in generic (skb) mode. Each program does nothing (TCX_NEXT,
// XDP_PASS). One locked thread sends 64 datagrams of 164 bytes with sendmmsg and reads
// them back with recvmmsg; loopback delivers inside the send, so the thread's own CPU
// time (cpu-ns/datagram, from getrusage: steadier than ns/op on a shared machine) is
// what sending and receiving a datagram costs. As root:
//
//	go test -run '^$' -bench HookOnLo -count 5 ./internal/offload
func BenchmarkHookOnLo(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("attaching programs needs root")
	}
	for _, hook := range []string{"none", "tcx", "xdp-generic"} {
		b.Run(hook, func(b *testing.B) {
			switch hook {
			case "tcx":
				attachNop(b, ebpf.SchedCLS, -1, func(p *ebpf.Program) (link.Link, error) {
					return link.AttachTCX(link.TCXOptions{Interface: 1, Program: p, Attach: ebpf.AttachTCXIngress})
				})
			case "xdp-generic":
				attachNop(b, ebpf.XDP, 2, func(p *ebpf.Program) (link.Link, error) {
					return link.AttachXDP(link.XDPOptions{Interface: 1, Program: p, Flags: link.XDPGenericMode})
				})
			}
			lo := netip.MustParseAddr("127.0.0.1")
			rx, err := rawudp.Open(rawudp.Options{Local: netip.AddrPortFrom(lo, 0), Buffer: 4 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer rx.Close()
			tx, err := rawudp.Open(rawudp.Options{Local: netip.AddrPortFrom(lo, 0), Remote: rx.LocalAddr()})
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Close()
			const batch = 64
			out, in := rawudp.NewBatch(batch, 164), rawudp.NewBatch(batch, 2048)
			for i := 0; i < batch; i++ {
				out.SetLen(i, 164)
			}
			b.SetBytes(164)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				sent, err := tx.Send(out, 0, n)
				if err != nil {
					b.Fatal(err)
				}
				for got := 0; got < sent; {
					k, err := rx.Recv(in)
					if err != nil || k == 0 {
						b.Fatalf("%d of %d datagrams arrived: %v", got, sent, err)
					}
					got += k
				}
				done += sent
			}
			b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/datagram")
		})
	}
}

// threadCPU is the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// attachNop attaches a program that returns ret at once, detached when b ends.
func attachNop(b *testing.B, typ ebpf.ProgramType, ret int32, attach func(*ebpf.Program) (link.Link, error)) {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		b.Skipf("loading a %v program: %v", typ, err)
	}
	l, err := attach(p)
	if err != nil {
		p.Close()
		b.Skipf("attaching a %v program: %v", typ, err)
	}
	b.Cleanup(func() { l.Close(); p.Close() })
}
