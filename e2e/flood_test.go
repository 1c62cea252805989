package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/auth"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// sumMetric adds every series of a metric family.
func sumMetric(m map[string]float64, name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// TestFloodsDoNotHurt: while a paced stream runs through an allocation, the same UDP
// listener is flooded with (a) random bytes, (b) unauthenticated Allocates from many
// source ports, (c) ChannelData for unbound channels and with lying lengths, and (d)
// STUN requests with hundreds of attributes. The stream loses nothing, memory stays
// bounded, and every flood datagram is accounted for: answered, or dropped by reason.
func TestFloodsDoNotHurt(t *testing.T) {
	p := startRelay(t, baseConfig(""))
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	_, stop, sent, got, done := streamThrough(t, p, a, "legit")
	rssBefore := rssKiB(t, p.cmd.Process.Pid)
	before := p.metrics()

	server, err := net.ResolveUDPAddr("udp4", p.addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	const perKind, sockets = 20000, 100
	conns := make([]*net.UDPConn, sockets)
	for i := range conns {
		if conns[i], err = net.DialUDP("udp4", nil, server); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	drain := make(chan struct{})
	var readers sync.WaitGroup
	var answered [4]int64
	var answeredMu sync.Mutex
	kind := 0
	for _, cn := range conns {
		readers.Add(1)
		go func(cn *net.UDPConn) { // count what the server answers to the flood
			defer readers.Done()
			buf := make([]byte, 2048)
			for {
				_ = cn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := cn.Read(buf); err != nil {
					select {
					case <-drain:
						return
					default:
						continue
					}
				}
				answeredMu.Lock()
				answered[kind]++
				answeredMu.Unlock()
			}
		}(cn)
	}
	huge := stun.New()
	huge.SetType(stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	huge.TransactionID = stun.NewTransactionID()
	huge.WriteHeader()
	for i := 0; i < 300; i++ {
		huge.Add(stun.AttrSoftware, []byte("x"))
	}
	floods := []struct {
		name string
		make func(i int, b []byte) []byte
	}{
		{"random bytes", func(i int, b []byte) []byte {
			_, _ = rand.Read(b[:64])
			b[0] = 0x80 | b[0]&0x3F // neither STUN (00) nor ChannelData (01)
			return b[:64]
		}},
		{"unauthenticated Allocates", func(i int, b []byte) []byte {
			m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
			return append(b[:0], m.Raw...)
		}},
		{"ChannelData unbound or lying", func(i int, b []byte) []byte {
			binary.BigEndian.PutUint16(b[0:2], 0x4000+uint16(i%0x1000))
			binary.BigEndian.PutUint16(b[2:4], uint16(100+i%2*60000)) // every other one lies
			return b[:104]
		}},
		{"STUN with 300 attributes", func(i int, b []byte) []byte {
			return append(b[:0], huge.Raw...)
		}},
	}
	type result struct {
		name              string
		sent, answered    int64
		dropped, accounts float64
	}
	var results []result
	for k, f := range floods {
		answeredMu.Lock()
		kind = k
		answeredMu.Unlock()
		m0 := p.metrics()
		buf := make([]byte, 2048)
		start := time.Now()
		for i := 0; i < perKind; i++ {
			_, _ = conns[i%sockets].Write(f.make(i, buf))
			if i%200 == 199 {
				// 20k datagrams a second: a flood the kernel's buffers take whole, so
				// that every datagram reaches relay and its counters can be checked.
				time.Sleep(time.Until(start.Add(time.Duration(i+1) * 50 * time.Microsecond)))
			}
		}
		var m1 map[string]float64
		waitFor(t, f.name+" to be accounted for", func() bool {
			m1 = p.metrics()
			answeredMu.Lock()
			ans := answered[k]
			answeredMu.Unlock()
			dropped := sumMetric(m1, "relay_turn_dropped_total") - sumMetric(m0, "relay_turn_dropped_total")
			return int64(dropped)+ans == perKind
		})
		answeredMu.Lock()
		ans := answered[k]
		answeredMu.Unlock()
		d := sumMetric(m1, "relay_turn_dropped_total") - sumMetric(m0, "relay_turn_dropped_total")
		results = append(results, result{f.name, perKind, ans, d, d + float64(ans)})
	}
	close(drain)
	readers.Wait()
	close(stop)
	<-done
	after := p.metrics()
	rssAfter := rssKiB(t, p.cmd.Process.Pid)

	t.Logf("legitimate paced stream during the floods: %d sent, %d echoed", sent.Load(), got.Load())
	for _, r := range results {
		t.Logf("%-30s sent %6d  answered %6d  dropped %6.0f  accounted %6.0f", r.name, r.sent, r.answered, r.dropped, r.accounts)
	}
	for _, reason := range []string{"malformed", "rate_limited", "no_allocation", "no_channel", "auth_blocked"} {
		k := `relay_turn_dropped_total{reason="` + reason + `"}`
		t.Logf("  dropped %-14s %7.0f", reason, after[k]-before[k])
	}
	t.Logf("relay RSS %d KiB before, %d KiB after the floods (%+d KiB)", rssBefore, rssAfter, rssAfter-rssBefore)
	if sent.Load() != got.Load() {
		t.Errorf("the legitimate stream lost %d of %d datagrams", sent.Load()-got.Load(), sent.Load())
	}
	if rssAfter-rssBefore > 32<<10 {
		t.Errorf("RSS grew by %d KiB under the floods; want under 32 MiB", rssAfter-rssBefore)
	}
	if after["relay_turn_allocations_active{transport=\"udp\"}"] != 1 {
		t.Errorf("allocations after the floods: %v", after["relay_turn_allocations_active{transport=\"udp\"}"])
	}
}

// TestSignalingChurn: 5,000 WebSocket connections opening and closing, some sending
// garbage, leave no goroutines or memory behind.
func TestSignalingChurn(t *testing.T) {
	p := startRelay(t, baseConfig("[signal]\nlisten = \"127.0.0.1:0\"\nmax_peers_per_ip = 10000\nconcurrent_limit = 10000\n"))
	url := "ws://" + p.addr("signal") + "/peerjs?key=peerjs&token=t&id="
	settle := func() map[string]float64 {
		var m map[string]float64
		waitFor(t, "no peers left", func() bool {
			m = p.metrics()
			return m["relay_signal_peers_connected"] == 0
		})
		return m
	}
	m0 := settle()
	rss0 := rssKiB(t, p.cmd.Process.Pid)
	const total, parallel = 5000, 50
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < total; i += parallel {
				ws, _, err := websocket.DefaultDialer.Dial(url+fmt.Sprintf("churn-%d", i), nil)
				if err != nil {
					errs <- err
					return
				}
				_, _, _ = ws.ReadMessage() // OPEN
				switch i % 3 {
				case 0:
					_ = ws.WriteMessage(websocket.TextMessage, []byte("{garbage"))
				case 1:
					_ = ws.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2})
				}
				_ = ws.Close()
			}
		}(w)
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	var m1 map[string]float64
	waitFor(t, "goroutines to return to their level", func() bool {
		m1 = settle()
		return m1["go_goroutines"] <= m0["go_goroutines"]+5
	})
	rss1 := rssKiB(t, p.cmd.Process.Pid)
	t.Logf("5000 connections: goroutines %v -> %v, RSS %d -> %d KiB", m0["go_goroutines"], m1["go_goroutines"], rss0, rss1)
	if rss1-rss0 > 32<<10 {
		t.Errorf("RSS grew by %d KiB after the churn", rss1-rss0)
	}
}
