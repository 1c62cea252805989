package relay

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
)

// challenge sends an Allocate without credentials and returns the NONCE of the 401.
func (c *rawClient) challenge() string {
	c.t.Helper()
	r := c.roundTrip(mustBuild(c.t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()), 2*time.Second)
	var nonce stun.Nonce
	if errorCode(r) != 401 || nonce.GetFrom(r) != nil {
		c.t.Fatalf("Allocate without credentials: %d, want 401 with a NONCE", errorCode(r))
	}
	return nonce.String()
}

// forgedAllocate is an Allocate for user signed with a key that is not the user's.
func forgedAllocate(t testing.TB, user, realm, nonce string) *stun.Message {
	t.Helper()
	return mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
		stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce(nonce),
		stun.MessageIntegrity(auth.LongTermKey(user, realm, "not the password")), stun.Fingerprint)
}

// allocateWithin allocates with pion's TURN client and fails the test unless it
// succeeds within limit.
func allocateWithin(t *testing.T, s *testServer, user, pass string, limit time.Duration) time.Duration {
	t.Helper()
	client := pionClient(t, s, "udp", nil, user, pass)
	start := time.Now()
	relayed, err := client.Allocate()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("valid Allocate for %q refused after %v: %v", user, took.Round(time.Millisecond), err)
	}
	_ = relayed.Close()
	if took > limit {
		t.Fatalf("valid Allocate for %q took %v, want under %v", user, took.Round(time.Millisecond), limit)
	}
	return took
}

// TestSecurity1TURNLockoutForgedFailures: requests anyone can forge (a made-up NONCE, a
// wrong MESSAGE-INTEGRITY, from any address) never keep the user they name from
// allocating with valid credentials.
func TestSecurity1TURNLockoutForgedFailures(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Auth.Users = map[string]string{"dave": "daves-own-password"}
	})
	attacker := dialRaw(t, "udp", s.addr("udp"), nil)

	t.Run("REST user, made-up nonce", func(t *testing.T) {
		user, pass := s.creds(t, "dave")
		forged := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":dave"
		for i := 0; i < 10; i++ {
			attacker.roundTrip(forgedAllocate(t, forged, testRealm, "made-up-nonce-"+strconv.Itoa(i)), 300*time.Millisecond)
		}
		allocateWithin(t, s, user, pass, time.Second)
	})

	t.Run("static user, made-up and real nonces", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			attacker.roundTrip(forgedAllocate(t, "dave", testRealm, "made-up-nonce-"+strconv.Itoa(i)), 300*time.Millisecond)
		}
		// A real NONCE costs the attacker one request: these are password guesses, and
		// spend dave's failure budget (auth_failures_per_user = 10) and the attacker's.
		nonce := attacker.challenge()
		for i := 0; i < 12; i++ {
			attacker.roundTrip(forgedAllocate(t, "dave", testRealm, nonce), 300*time.Millisecond)
		}
		allocateWithin(t, s, "dave", "daves-own-password", time.Second)
	})

	if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(string(auth.ReasonBadPassword))); got != 12 {
		t.Errorf("relay_turn_auth_failures_total{reason=bad_password} = %v, want 12 (the guesses with a real nonce only)", got)
	}
}

// TestSecurity1TURNLockoutNotFailures: a wrong realm, an unknown nonce and a username
// that is not credentials are answered (401 or 438, with REALM and NONCE) but are no
// failure of any user and cost no key derivation.
func TestSecurity1TURNLockoutNotFailures(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Auth.Users = map[string]string{"erin": "erins-password"}
		c.Limits.AuthFailuresPerUser = 1
		c.Limits.AuthFailuresPerIP = 1
	})
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	nonce := c.challenge()
	check := func(what string, m *stun.Message, want int) {
		t.Helper()
		r := c.roundTrip(m, 2*time.Second)
		var realm stun.Realm
		var n stun.Nonce
		if errorCode(r) != want || realm.GetFrom(r) != nil || n.GetFrom(r) != nil {
			t.Errorf("%s: %d, want %d with REALM and NONCE", what, errorCode(r), want)
		}
	}
	for i := 0; i < 3; i++ {
		check("unknown nonce", forgedAllocate(t, "erin", testRealm, "made-up"), 438)
		check("wrong realm", forgedAllocate(t, "erin", "other.realm", nonce), 401)
		check("not credentials", forgedAllocate(t, "no-such-user", testRealm, nonce), 401)
	}
	if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropAuthBlocked)); got != 0 {
		t.Errorf("relay_turn_dropped_total{reason=auth_blocked} = %v: these are not authentication failures", got)
	}
	if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(string(auth.ReasonBadPassword))); got != 0 {
		t.Errorf("bad_password counted %v times", got)
	}
	if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(reasonWrongRealm)); got != 3 {
		t.Errorf("relay_turn_auth_failures_total{reason=wrong_realm} = %v, want 3", got)
	}
	allocateWithin(t, s, "erin", "erins-password", time.Second)
}

// TestSecurity1PasswordGuessing: wrong guesses of a static user's password are counted,
// and past auth_failures_per_user (per user) or auth_failures_per_ip (per source) get
// no answer; the right password is still accepted, from anywhere.
func TestSecurity1PasswordGuessing(t *testing.T) {
	t.Run("per user", func(t *testing.T) {
		s := startServer(t, func(c *config.Config) {
			c.Auth.Users = map[string]string{"carol": "carols-password"}
			c.Limits.AuthFailuresPerUser = 5
			c.Limits.AuthFailuresPerIP = 1000
		})
		c := dialRaw(t, "udp", s.addr("udp"), nil)
		answered := guess(t, c, 12, func(int) string { return "carol" })
		if answered != 5 {
			t.Errorf("%d of 12 wrong passwords answered with 401, want 5 then silence", answered)
		}
		if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropAuthBlocked)); got != 7 {
			t.Errorf("relay_turn_dropped_total{reason=auth_blocked} = %v, want 7", got)
		}
		if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(string(auth.ReasonBadPassword))); got != 12 {
			t.Errorf("relay_turn_auth_failures_total{reason=bad_password} = %v, want 12", got)
		}
		if got := testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("unauthorized")); got != 12 {
			t.Errorf("relay_turn_allocations_total{result=unauthorized} = %v, want 12", got)
		}
		// The right password still works, from the guesser's connection too.
		if _, r := c.allocate("carol", "carols-password"); errorCode(r) != 0 {
			t.Errorf("the right password after the limit: %d", errorCode(r))
		}
		allocateWithin(t, s, "carol", "carols-password", time.Second)
	})

	t.Run("per source", func(t *testing.T) {
		users := map[string]string{}
		for i := 0; i < 12; i++ {
			users["user"+strconv.Itoa(i)] = "password-" + strconv.Itoa(i)
		}
		s := startServer(t, func(c *config.Config) {
			c.Auth.Users = users
			c.Limits.AuthFailuresPerUser = 1000
			c.Limits.AuthFailuresPerIP = 5
		})
		c := dialRaw(t, "udp", s.addr("udp"), nil)
		answered := guess(t, c, 12, func(i int) string { return "user" + strconv.Itoa(i) })
		if answered != 5 {
			t.Errorf("%d of 12 wrong passwords from one source answered, want 5 then silence", answered)
		}
		if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(string(auth.ReasonBadPassword))); got != 12 {
			t.Errorf("relay_turn_auth_failures_total{reason=bad_password} = %v, want 12", got)
		}
		allocateWithin(t, s, "user3", "password-3", time.Second)
	})
}

// guess sends n Allocates with wrong passwords for userOf(i) and a real nonce, and
// returns how many were answered with 401.
func guess(t *testing.T, c *rawClient, n int, userOf func(int) string) int {
	t.Helper()
	nonce := c.challenge()
	answered := 0
	for i := 0; i < n; i++ {
		r := c.roundTrip(forgedAllocate(t, userOf(i), testRealm, nonce), 200*time.Millisecond)
		switch errorCode(r) {
		case 401:
			answered++
		case -1:
		default:
			t.Fatalf("guess %d: %d", i, errorCode(r))
		}
	}
	return answered
}

// BenchmarkGateForgedAllocate is the server's cost of one forged Allocate of the flood
// in TestSecurity1TURNLockoutFlood, in the gate (without the socket): a random user id,
// a wrong MESSAGE-INTEGRITY, and a made-up or a real nonce (the latter costs a key
// derivation and an HMAC check).
func BenchmarkGateForgedAllocate(b *testing.B) {
	s := startServerLogging(b, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.nonces.add([]byte("real-nonce"), time.Now())
	g := newGate(s.Server, "udp", netip.MustParseAddrPort("127.0.0.1:3478"), false)
	expiry := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	for _, nonce := range []string{"made-up", "real-nonce"} {
		b.Run(nonce, func(b *testing.B) {
			reqs := make([][]byte, 4096)
			for i := range reqs {
				reqs[i] = forgedAllocate(b, expiry+":user"+strconv.Itoa(i), testRealm, nonce).Raw
			}
			rep := &nopReplier{}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A new source address each time, as in a flood from spoofed addresses.
				from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
				if g.inspect(reqs[i%len(reqs)], from, rep) {
					b.Fatal("a forged Allocate passed to pion")
				}
			}
		})
	}
}

// TestNonceBookLearnsPionNonces: the nonces pion hands out over UDP and TCP reach the
// book on their way out, so the gate takes them for real ones.
func TestNonceBookLearnsPionNonces(t *testing.T) {
	s := startServer(t, nil)
	for _, transport := range []string{"udp", "tcp"} {
		nonce := dialRaw(t, transport, s.addr(transport), nil).challenge()
		if !s.nonces.known([]byte(nonce), time.Now()) {
			t.Errorf("the nonce pion sent over %s is not in the book", transport)
		}
		if fresh, ok := s.nonces.fresh(time.Now()); !ok || fresh == "" {
			t.Errorf("no fresh nonce to hand out after a challenge over %s", transport)
		}
	}
}

// TestNonceBook: validity, freshness and the cap.
func TestNonceBook(t *testing.T) {
	nb := newNonceBook()
	now := time.Now()
	if _, ok := nb.fresh(now); ok {
		t.Error("an empty book hands out a nonce")
	}
	nb.add([]byte("first"), now)
	if !nb.known([]byte("first"), now.Add(nonceValidity-time.Second)) || nb.known([]byte("first"), now.Add(nonceValidity)) {
		t.Error("validity window")
	}
	if n, ok := nb.fresh(now.Add(nonceFresh - time.Second)); !ok || n != "first" {
		t.Error("fresh nonce")
	}
	if _, ok := nb.fresh(now.Add(nonceFresh)); ok {
		t.Error("a nonce too old to hand out is handed out")
	}
	for i := 0; i < maxNonces; i++ {
		nb.add([]byte("n"+strconv.Itoa(i)), now.Add(time.Duration(i+1)*time.Millisecond))
	}
	if len(nb.seen) != maxNonces || nb.known([]byte("first"), now) || !nb.known([]byte("n0"), now) {
		t.Errorf("the cap: %d nonces, the oldest must go first", len(nb.seen))
	}
	// observe reads the NONCE of an error response, and nothing else.
	resp, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.CodeUnauthorized, stun.NewRealm(testRealm), stun.NewNonce("from-an-answer"))
	if err != nil {
		t.Fatal(err)
	}
	req := mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.NewNonce("from-a-request"))
	nb.observe(resp.Raw)
	nb.observe(req.Raw)
	if !nb.known([]byte("from-an-answer"), time.Now()) || nb.known([]byte("from-a-request"), time.Now()) {
		t.Error("observe")
	}
}

// TestPerSourceLimitsIPv6Prefix: the per-source limits count an IPv6 source by its /64
// (one host usually holds a whole /64 and may use any address in it): answers to
// unauthenticated requests (unauth_per_ip) and wrong passwords answered
// (auth_failures_per_ip) from addresses of one /64 share one budget; another /64 has
// its own, and IPv4 sources still count one by one.
func TestPerSourceLimitsIPv6Prefix(t *testing.T) {
	users := map[string]string{}
	for i := range 40 {
		users["u"+strconv.Itoa(i)] = "right-" + strconv.Itoa(i)
	}
	s := startServerLogging(t, func(c *config.Config) {
		c.Limits.UnauthPerIP = 5 // bursts of 10
		c.Limits.AuthFailuresPerIP = 4
		c.Limits.AuthFailuresPerUser = 1000
		c.Auth.Users = users
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.nonces.add([]byte("real-nonce"), time.Now())
	g := newGate(s.Server, "udp", netip.MustParseAddrPort("[2001:db8::1]:3478"), false)
	set := s.settings.Load()
	in64 := func(prefix string, i int) netip.AddrPort {
		return netip.MustParseAddrPort(fmt.Sprintf("[%s:%x:%x::%x]:40000", prefix, i>>8, i&0xff, i+1))
	}
	allowed := 0
	for i := range 40 {
		if g.unauthReply(set, in64("2001:db8:1:1", i)) {
			allowed++
		}
	}
	if allowed > 11 {
		t.Errorf("unauthenticated replies to 40 addresses of one /64: %d, want the burst of one source (10)", allowed)
	}
	if !g.unauthReply(set, in64("2001:db8:1:2", 0)) {
		t.Error("another /64 was refused")
	}
	for i := range 20 {
		if !g.unauthReply(set, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 40000)) {
			t.Errorf("IPv4 source %d refused: IPv4 addresses count one by one", i)
		}
	}
	rep := &nopReplier{}
	answered := 0
	for i := range 40 {
		before := rep.n
		g.inspect(forgedAllocate(t, "u"+strconv.Itoa(i), testRealm, "real-nonce").Raw, in64("2001:db8:2:1", i), rep)
		if rep.n > before {
			answered++
		}
	}
	if answered > 5 {
		t.Errorf("wrong passwords from 40 addresses of one /64 answered: %d, want the 4 of one source", answered)
	}
}
