package relay

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
)

// rawRequest sends bytes and returns the response with the given transaction ID, if any.
func (c *rawClient) rawRequest(b []byte, timeout time.Duration) *stun.Message {
	c.t.Helper()
	var m stun.Message
	m.Raw = b
	if len(b) >= 20 {
		copy(m.TransactionID[:], b[8:20])
	}
	return c.roundTrip(&m, timeout)
}

// TestBadInput walks the numbered bad-input table of SECURITY.md: each row gets the
// exact STUN answer (or is dropped) and is counted.
func TestBadInput(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Limits.PermissionsPerAllocation = 2
		c.Limits.ChannelsPerAllocation = 1
	})
	user, pass := s.creds(t, "tester")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	req := func(method stun.Method, extra ...stun.Setter) *stun.Message {
		return sess.request(append([]stun.Setter{stun.NewType(method, stun.ClassRequest)}, extra...)...)
	}
	public := func(s string) xorPeer { return xorPeer{netip.MustParseAddrPort(s)} }

	t.Run("5 unknown method: 400", func(t *testing.T) {
		if got := errorCode(req(stun.Method(0x0FF))); got != 400 {
			t.Errorf("got %d", got)
		}
		// Unauthenticated too.
		if got := errorCode(c.roundTrip(mustBuild(t, stun.NewType(stun.Method(0x0FF), stun.ClassRequest)), time.Second)); got != 400 {
			t.Errorf("unauthenticated: got %d", got)
		}
	})
	t.Run("5 malformed attribute length: 400", func(t *testing.T) {
		m := mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP())
		b := append([]byte(nil), m.Raw...)
		binary.BigEndian.PutUint16(b[22:24], 200) // REQUESTED-TRANSPORT claims 200 bytes
		if got := errorCode(c.rawRequest(b, time.Second)); got != 400 {
			t.Errorf("got %d", got)
		}
	})
	t.Run("5 malformed indication: dropped", func(t *testing.T) {
		before := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("malformed"))
		m := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), public("8.8.8.8:53"))
		b := append([]byte(nil), m.Raw...)
		binary.BigEndian.PutUint16(b[22:24], 300)
		if _, err := c.conn.Write(b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the drop to be counted", func() bool {
			return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("malformed")) == before+1
		})
	})
	t.Run("7 channel numbers outside the range: 400", func(t *testing.T) {
		for _, n := range []uint16{0x0000, 0x3FFF, 0x8000, 0xFFFF} {
			if got := errorCode(req(stun.MethodChannelBind, channelNumber(n), public("8.8.8.8:53"))); got != 400 {
				t.Errorf("0x%04x: got %d", n, got)
			}
		}
	})
	t.Run("9 attributes after MESSAGE-INTEGRITY: ignored", func(t *testing.T) {
		m := mustBuild(t, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(10*time.Minute),
			stun.NewUsername(sess.user), stun.NewRealm(sess.realm), stun.NewNonce(sess.nonce),
			stun.MessageIntegrity(sess.key), stun.NewSoftware("after-integrity"))
		if got := errorCode(c.rawRequest(m.Raw, time.Second)); got != 0 {
			t.Errorf("got %d, want success", got)
		}
	})
	t.Run("12 permission and channel caps: 508", func(t *testing.T) {
		if got := errorCode(req(stun.MethodCreatePermission, public("8.8.8.8:1"), public("8.8.4.4:1"))); got != 0 {
			t.Fatalf("two permissions: %d", got)
		}
		if got := errorCode(req(stun.MethodCreatePermission, public("1.1.1.1:1"))); got != 508 {
			t.Errorf("third permission: %d, want 508", got)
		}
		if got := errorCode(req(stun.MethodCreatePermission, public("8.8.8.8:9"))); got != 0 {
			t.Errorf("refreshing an existing permission: %d", got)
		}
		if got := errorCode(req(stun.MethodChannelBind, channelNumber(0x4000), public("8.8.8.8:1"))); got != 0 {
			t.Fatalf("first channel: %d", got)
		}
		if got := errorCode(req(stun.MethodChannelBind, channelNumber(0x4001), public("8.8.4.4:1"))); got != 508 {
			t.Errorf("second channel: %d, want 508", got)
		}
		if got := errorCode(req(stun.MethodChannelBind, channelNumber(0x4000), public("8.8.8.8:1"))); got != 0 {
			t.Errorf("refreshing the channel: %d", got)
		}
		if testutil.ToFloat64(s.metrics.QuotaRejections.WithLabelValues("permissions")) != 1 ||
			testutil.ToFloat64(s.metrics.QuotaRejections.WithLabelValues("channels")) != 1 {
			t.Errorf("quota rejections not counted")
		}
	})
	t.Run("13 hostile USERNAME: 401, never a label", func(t *testing.T) {
		evil := "%s%n%x\x00\x07" + strings.Repeat("A", 500)
		c2 := dialRaw(t, "udp", s.addr("udp"), nil)
		if _, r := c2.allocate(evil, "x"); errorCode(r) != 401 {
			t.Errorf("got %d", errorCode(r))
		}
		var buf bytes.Buffer
		mfs, _ := s.metrics.Registry.Gather()
		for _, mf := range mfs {
			buf.WriteString(mf.String())
		}
		if strings.Contains(buf.String(), "%s%n") || strings.Contains(buf.String(), "AAAA") {
			t.Error("the username reached the metrics")
		}
	})
	t.Run("lifetime clamped to max_lifetime", func(t *testing.T) {
		r := req(stun.MethodRefresh, lifetime(2*time.Hour))
		var lt [4]byte
		v, err := r.Get(stun.AttrLifetime)
		if errorCode(r) != 0 || err != nil || len(v) != 4 {
			t.Fatalf("Refresh: %d %v", errorCode(r), err)
		}
		copy(lt[:], v)
		if got := binary.BigEndian.Uint32(lt[:]); got != 3599 {
			t.Errorf("granted %d s for a 2 h request, want 3599 (max_lifetime 1h; pion grants under an hour)", got)
		}
	})
}

// TestStrictChannelNumbers: with strict_channel_numbers, RFC 8656's range only.
func TestStrictChannelNumbers(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.TURN.StrictChannelNumbers = true })
	user, pass := s.creds(t, "strict")
	sess, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatal(errorCode(r))
	}
	peer := xorPeer{netip.MustParseAddrPort("8.8.8.8:53")}
	if got := errorCode(sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x5000), peer)); got != 400 {
		t.Errorf("0x5000 under strict_channel_numbers: %d, want 400", got)
	}
	if got := errorCode(sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4FFF), peer)); got != 0 {
		t.Errorf("0x4FFF: %d", got)
	}
}

// TestUnauthenticatedFlood: replies to unauthenticated requests from one source are
// rate-limited (a 401 is bigger than the request: reflection), the rest dropped and
// counted, and no state is kept per source.
func TestUnauthenticatedFlood(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.Limits.UnauthPerIP = 20 })
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	const sent = 300
	for i := 0; i < sent; i++ {
		m := mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP())
		if _, err := c.conn.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
	}
	answered := 0
	buf := make([]byte, 1500)
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.conn.Read(buf); err != nil {
			break
		}
		answered++
	}
	dropped := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("rate_limited"))
	if answered > 60 || answered < 40 {
		t.Errorf("%d of %d unauthenticated Allocates answered; want about the burst of 40", answered, sent)
	}
	if int(dropped)+answered != sent {
		t.Errorf("answered %d + dropped %v != sent %d: every request must be accounted for", answered, dropped, sent)
	}
	if n := s.allocs.total(); n != 0 {
		t.Errorf("%d allocations or reservations after unauthenticated requests", n)
	}
}

// TestBandwidthCap: a client sending faster than max_bps has the excess dropped and
// counted; the rest is relayed.
func TestBandwidthCap(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		allowLoopback(c)
		c.Limits.MaxBPS = 80_000 // 10 kB/s, a second's worth of burst
	})
	cs := bindChannel(t, s, "udp")
	payload := make([]byte, 1000)
	for i := 0; i < 30; i++ { // 30 kB at once: a third fits the burst
		if _, err := cs.conn.Write(channelData(0x4001, payload)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the excess to be dropped", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("bandwidth")) >= 19
	})
	relayed := testutil.ToFloat64(s.metrics.PacketsClientToPeer)
	dropped := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("bandwidth"))
	if relayed+dropped != 30 || relayed < 9 || relayed > 11 {
		t.Errorf("relayed %v, dropped %v of 30 packets of 1000 B under a 10 kB/s cap", relayed, dropped)
	}
}

// TestStreamIdleWithoutAllocation: a TCP or TLS connection that has no allocation and
// completes no message for streamIdleTimeout is closed, whether it sent nothing or
// trickles a message in a byte at a time (each byte does not buy more time); one with
// an allocation stays open while it is silent, and a connection whose client released
// its allocation is idle again.
func TestStreamIdleWithoutAllocation(t *testing.T) {
	old := streamIdleTimeout
	streamIdleTimeout = 300 * time.Millisecond
	t.Cleanup(func() { streamIdleTimeout = old })
	certFile, keyFile, client := selfSignedTLS(t)
	s := startServer(t, func(c *config.Config) {
		c.TURN.TLS = []string{"127.0.0.1:0"}
		c.TURN.TLSCert, c.TURN.TLSKey = certFile, keyFile
	})
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 64))
		return err != nil && !isTimeout(err)
	}
	for _, tr := range []struct {
		name string
		conf *tls.Config
	}{{"tcp", nil}, {"tls", client}} {
		t.Run(tr.name+"/silent", func(t *testing.T) {
			c := dialRaw(t, "tcp", s.addr(tr.name), tr.conf)
			if !closedWithin(c.conn, 5*time.Second) {
				t.Fatal("a silent connection without an allocation was not closed")
			}
		})
		t.Run(tr.name+"/trickle", func(t *testing.T) {
			c := dialRaw(t, "tcp", s.addr(tr.name), tr.conf)
			start := time.Now()
			req := mustBuild(t, stun.BindingRequest, stun.Fingerprint).Raw
			for i := 0; i < len(req)-1; i++ {
				if _, err := c.conn.Write(req[i : i+1]); err != nil {
					break // closed meanwhile
				}
				if closedWithin(c.conn, 100*time.Millisecond) {
					break
				}
			}
			if took := time.Since(start); took > 2*time.Second || !closedWithin(c.conn, 5*time.Second) {
				t.Fatalf("a message trickled in a byte every 100 ms kept the connection for %v", took)
			}
		})
		t.Run(tr.name+"/allocated", func(t *testing.T) {
			c := dialRaw(t, "tcp", s.addr(tr.name), tr.conf)
			user, pass := s.creds(t, "idle-"+tr.name)
			sess, r := c.allocate(user, pass)
			if errorCode(r) != 0 {
				t.Fatalf("Allocate: %d", errorCode(r))
			}
			if closedWithin(c.conn, 4*streamIdleTimeout) {
				t.Fatal("a silent connection with an allocation was closed")
			}
			if r := sess.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); errorCode(r) != 0 {
				t.Fatalf("Refresh 0 after the silence: %d", errorCode(r))
			}
			if !closedWithin(c.conn, 5*time.Second) {
				t.Fatal("the connection stayed open after its allocation was released")
			}
		})
		t.Run(tr.name+"/expired", func(t *testing.T) {
			c := dialRaw(t, "tcp", s.addr(tr.name), tr.conf)
			user, pass := s.creds(t, "expire-"+tr.name)
			if _, r := c.allocate(user, pass, requestedUDP(), stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 1}}); errorCode(r) != 0 {
				t.Fatalf("Allocate: %d", errorCode(r))
			}
			if !closedWithin(c.conn, 5*time.Second) {
				t.Fatal("a silent connection stayed open after its allocation expired")
			}
		})
	}
}
