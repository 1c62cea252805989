package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/relayproject/relay/config"
)

// The flood of TestSecurity1TURNLockoutFlood: Allocates with random user ids and wrong
// MESSAGE-INTEGRITY, from 15,000 source addresses (127.0.1.1-127.0.60.250).
const (
	floodRate    = 3000 // requests per second
	floodSources = 15000
	floodFor     = 5 * time.Second // every source address sends once
)

// TestSecurity1TURNLockoutFlood: under a sustained flood of forged Allocates with random
// user ids from many source addresses, every fresh user with valid credentials gets an
// allocation within a second. Half the flood carries a made-up NONCE, half a real one
// (which makes the server derive keys and check the HMAC). The flood comes from a
// separate process, so the CPU this process uses is the server's (and the legitimate
// clients'): it is logged.
//
// The failure budgets are lowered to one per minute so that a few seconds of flood
// exhaust them as minutes of it would at the defaults.
func TestSecurity1TURNLockoutFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of flood")
	}
	// Info level even with -v: debug lines per request would be most of the CPU measured.
	s := startServerLogging(t, func(c *config.Config) {
		c.Limits.AuthFailuresPerIP = 1
		c.Limits.AuthFailuresPerUser = 1
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	nonce := dialRaw(t, "udp", s.addr("udp"), nil).challenge()

	ctx, cancel := context.WithTimeout(context.Background(), floodFor+30*time.Second)
	defer cancel()
	flood := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFloodSenderProcess$", "-test.count=1")
	flood.Env = append(os.Environ(), "RELAY_TEST_FLOOD="+s.addr("udp")+","+nonce)
	var floodOut strings.Builder
	flood.Stdout, flood.Stderr = &floodOut, &floodOut
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- flood.Wait() }()
	defer func() {
		_ = flood.Process.Kill()
		<-done
	}()

	// Wait for the flood to arrive before the first legitimate user.
	waitFor(t, "the flood to start", func() bool {
		return testutil.ToFloat64(s.metrics.Requests.WithLabelValues("allocate", "4xx")) > 100
	})
	cpuStart, wallStart := cpuTime(t), time.Now()
	var took []time.Duration
	for i := 0; time.Since(wallStart) < floodFor-time.Second; i++ {
		user, pass := s.creds(t, "fresh-"+strconv.Itoa(i))
		took = append(took, allocateWithin(t, s, user, pass, time.Second))
		time.Sleep(100 * time.Millisecond) // pace the legitimate users; not synchronisation
	}
	cpu, wall := cpuTime(t)-cpuStart, time.Since(wallStart)
	if err := <-done; err != nil {
		t.Fatalf("flood sender: %v\n%s", err, floodOut.String())
	}
	done <- nil // for the deferred wait
	slices.Sort(took)
	t.Logf("%s", strings.TrimSpace(floodOut.String()))
	t.Logf("%d fresh users allocated during the flood: p50 %v, max %v; server process CPU %.0f%% of one core (%v in %v)",
		len(took), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond),
		100*cpu.Seconds()/wall.Seconds(), cpu.Round(time.Millisecond), wall.Round(time.Millisecond))
	t.Logf("auth failures counted: %v bad_password; dropped: %v auth_blocked, %v rate_limited",
		testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues("bad_password")),
		testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropAuthBlocked)),
		testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropRateLimited)))
}

// cpuTime is the CPU this process has used (user and system).
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFloodSenderProcess is the flood of TestSecurity1TURNLockoutFlood, run in a process
// of its own; it does nothing unless RELAY_TEST_FLOOD names the server and a nonce.
func TestFloodSenderProcess(t *testing.T) {
	env := os.Getenv("RELAY_TEST_FLOOD")
	if env == "" {
		t.Skip("the flood sender of TestSecurity1TURNLockoutFlood")
	}
	target, nonce, _ := strings.Cut(env, ",")
	to := netip.MustParseAddrPort(target)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetWriteBuffer(4 << 20)

	// Every source address is a 127.0.0.0/8 address, which Linux accepts as the source
	// of a datagram (IP_PKTINFO) from a socket bound to 127.0.0.1.
	sources := make([][]byte, 0, floodSources)
	for a := 1; a <= 60; a++ {
		for b := 1; b <= 250; b++ {
			sources = append(sources, unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: [4]byte{127, 0, byte(a), byte(b)}}))
		}
	}
	expiry := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	var id [8]byte
	sent, failed := 0, 0
	start := time.Now()
	for time.Since(start) < floodFor {
		// Pace in slices of 10 ms.
		due := int(time.Since(start).Seconds()*floodRate) + floodRate/100
		for ; sent < due; sent++ {
			_, _ = rand.Read(id[:])
			n := "made-up-" + hex.EncodeToString(id[:4])
			if sent%2 == 1 {
				n = nonce
			}
			var mi [20]byte
			_, _ = rand.Read(mi[:])
			m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
				stun.NewUsername(expiry+":"+hex.EncodeToString(id[:])), stun.NewRealm(testRealm), stun.NewNonce(n),
				stun.RawAttribute{Type: stun.AttrMessageIntegrity, Value: mi[:]}, stun.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := conn.WriteMsgUDPAddrPort(m.Raw, sources[sent%len(sources)], to); err != nil {
				failed++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	fmt.Printf("flood: %d forged Allocates in %v (%.0f/s) from %d source addresses, %d send errors\n",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), min(sent, len(sources)), failed)
}
