//go:build linux

package wsconn

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Attacks on the wss record layer from a client that holds the connection's keys:
// everything here is what a hostile client (not a network attacker) can do.

// TestTLSKeyUpdateFloodHoldsNoMemory: a client that asks for our KeyUpdate over and
// over (16 requests, then one message to stay within the rule on
// records without data, again and again) while it reads nothing must not make the
// server hold a KeyUpdate of its own per request: RFC 8446 4.6.3 lets a silent
// endpoint answer many requests with one update. The bytes held for the socket stay
// bounded, whatever the client sends.
func TestTLSKeyUpdateFloodHoldsNoMemory(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	ts.handshakeOver(t, c, "flood")
	h := ts.conn("flood")
	h.c.mu.Lock()
	fd := h.c.fd
	h.c.mu.Unlock()
	// A small send buffer, so that what the server cannot write shows soon in what it
	// holds (the client's receive buffer does not grow while it reads nothing).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}

	const rounds = 2000 // 32,000 requests, 27 bytes each way
	held := 0
	for i := range rounds {
		var batch []byte
		for range maxUselessRecords {
			var err error
			if batch, err = c.r.sealKeyUpdate(batch, true); err != nil {
				t.Fatal(err)
			}
		}
		batch, err := c.r.seal(batch, clientFrame(true, OpBinary, []byte("x"), true), recordTypeApplication)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Conn.Write(batch); err != nil {
			t.Fatalf("round %d: %v (the server closed the connection)", i, err)
		}
		if i%100 == 99 {
			// The server has read the flood so far: the message of this round arrived.
			waitFor(t, "the server to read the flood", func() bool { return len(h.messages()) == i+1 || h.c.Closed() })
			held = max(held, h.c.Held())
			if held > 64<<10 {
				t.Fatalf("after %d KeyUpdate requests the server holds %d bytes for a client that reads nothing", (i+1)*maxUselessRecords, held)
			}
		}
	}
	t.Logf("%d KeyUpdate requests: at most %d bytes held", rounds*maxUselessRecords, held)
}

// TestTLSKeyUpdatesAdmitted: every KeyUpdate a client sends is a control record, counted
// by the Handler's Admit as pings are, so a flood of them meets the same rate limit;
// one the Handler refuses is still followed (the client's key moves on) but not
// answered at once: our KeyUpdate goes out before our next application data, as RFC
// 8446 4.6.3 requires.
func TestTLSKeyUpdatesAdmitted(t *testing.T) {
	var control atomic.Int32
	refuse := atomic.Bool{}
	ts := startServer(t, testOptions{tls: true, admit: func(h *echoHandler, isControl bool) bool {
		if isControl {
			control.Add(1)
			return !refuse.Load()
		}
		return true
	}})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	rc := ts.handshakeOver(t, c, "ku")
	rc.expectEcho("before")
	for _, request := range []bool{false, true, false, true, true} {
		if err := c.writeKeyUpdate(request); err != nil {
			t.Fatal(err)
		}
	}
	rc.expectEcho("after five updates")
	if got := control.Load(); got != 5 {
		t.Errorf("%d control frames admitted for 5 KeyUpdates", got)
	}

	refuse.Store(true)
	before := c.r.in.secret
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	rc.expectEcho("after a refused update")
	if c.r.in.secret == before {
		t.Error("the server sent application data after a KeyUpdate request without its own KeyUpdate")
	}
}
