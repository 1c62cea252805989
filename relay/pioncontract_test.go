package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// The tests of pioncontract.go: pion's real server, driven through scripted sockets that
// write down, in order, everything pion does with them. Each fails if pion stops doing
// what relay relies on.

const (
	contractRealm = "contract.test"
	contractUser  = "alice"
	contractPass  = "secret"
)

// journal is what happened, in order.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
	j.mu.Unlock()
}

func (j *journal) snapshot() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

// index is the first entry at or after from that starts with prefix, or -1.
func index(entries []string, prefix string, from int) int {
	for i := max(from, 0); i < len(entries); i++ {
		if strings.HasPrefix(entries[i], prefix) {
			return i
		}
	}
	return -1
}

// waitFor polls until an entry starting with prefix exists at or after from, and
// returns its index.
func (j *journal) waitFor(t *testing.T, prefix string, from int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if i := index(j.snapshot(), prefix, from); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("pion never did %q; it did:\n  %s", prefix, strings.Join(j.snapshot(), "\n  "))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// describe names a STUN message ("Allocate success response") or says ChannelData.
func describe(b []byte) string {
	if isChannelData(b) {
		return "ChannelData"
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return "not STUN"
	}
	return m.Type.String()
}

// scripted is what a scripted socket's next read returns.
type scripted struct {
	b    []byte
	from net.Addr
	err  error
}

// scriptedPacketConn is a UDP listener socket: reads come from in, writes go to out.
type scriptedPacketConn struct {
	j       *journal
	local   *net.UDPAddr
	in      chan scripted
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
	reading atomic.Int32
	overlap atomic.Bool  // two ReadFrom calls at once
	bufLen  atomic.Int64 // the size of pion's read buffer
}

func newScriptedPacketConn(j *journal) *scriptedPacketConn {
	return &scriptedPacketConn{j: j, local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478},
		in: make(chan scripted, 16), out: make(chan []byte, 64), closed: make(chan struct{})}
}

func (c *scriptedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.reading.Add(1) > 1 {
		c.overlap.Store(true)
	}
	defer c.reading.Add(-1)
	c.bufLen.Store(int64(len(p)))
	c.j.add("read")
	select {
	case d := <-c.in:
		if d.err != nil {
			return 0, nil, d.err
		}
		c.j.add("got %s", describe(d.b))
		return copy(p, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *scriptedPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	c.j.add("write %s", describe(p))
	select {
	case c.out <- bytes.Clone(p):
		return len(p), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *scriptedPacketConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *scriptedPacketConn) LocalAddr() net.Addr              { return c.local }
func (c *scriptedPacketConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedPacketConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedPacketConn) SetWriteDeadline(time.Time) error { return nil }

// scriptedRelays is the RelayAddressGenerator: each allocation gets a scriptedRelayConn.
type scriptedRelays struct {
	j     *journal
	mu    sync.Mutex
	conns []*scriptedRelayConn
}

func (r *scriptedRelays) Validate() error { return nil }

func (r *scriptedRelays) AllocatePacketConn(string, int) (net.PacketConn, net.Addr, error) {
	r.mu.Lock()
	c := &scriptedRelayConn{j: r.j, addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000 + len(r.conns)},
		in: make(chan scripted, 4), sent: make(chan scripted, 4), closed: make(chan struct{})}
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	r.j.add("allocate-conn %s", c.addr)
	return c, c.addr, nil
}

func (r *scriptedRelays) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

func (r *scriptedRelays) last(t *testing.T) *scriptedRelayConn {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) == 0 {
		t.Fatal("pion allocated no relay socket")
	}
	return r.conns[len(r.conns)-1]
}

// scriptedRelayConn is a relay socket: reads (data from peers) come from in, writes (to
// peers) go to sent.
type scriptedRelayConn struct {
	j         *journal
	addr      *net.UDPAddr
	in, sent  chan scripted
	closed    chan struct{}
	once      sync.Once
	bufLen    atomic.Int64
	deadlines atomic.Int32
}

func (c *scriptedRelayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.bufLen.Store(int64(len(p)))
	select {
	case d := <-c.in:
		return copy(p, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *scriptedRelayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.j.add("relay-write %T %s", addr, addr)
	c.sent <- scripted{b: bytes.Clone(p), from: addr}
	return len(p), nil
}

func (c *scriptedRelayConn) Close() error {
	c.once.Do(func() {
		c.j.add("relay-close %s", c.addr)
		close(c.closed)
	})
	return nil
}

func (c *scriptedRelayConn) LocalAddr() net.Addr { return c.addr }
func (c *scriptedRelayConn) SetDeadline(time.Time) error {
	c.deadlines.Add(1)
	return nil
}
func (c *scriptedRelayConn) SetReadDeadline(time.Time) error {
	c.deadlines.Add(1)
	return nil
}
func (c *scriptedRelayConn) SetWriteDeadline(time.Time) error {
	c.deadlines.Add(1)
	return nil
}

// scriptedListener hands out what accept holds.
type scriptedListener struct {
	j      *journal
	accept chan scriptedAccept
	closed chan struct{}
	once   sync.Once
}

type scriptedAccept struct {
	c   net.Conn
	err error
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.j.add("accept")
	select {
	case a := <-l.accept:
		return a.c, a.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *scriptedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *scriptedListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
}

// scriptedStreamConn is a TCP client's connection: Read returns in's frames, one per call.
type scriptedStreamConn struct {
	j             *journal
	local, remote *net.TCPAddr
	in            chan scripted
	out           chan []byte
	closed        chan struct{}
	once          sync.Once
}

func newScriptedStreamConn(j *journal, port int) *scriptedStreamConn {
	return &scriptedStreamConn{j: j, local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478},
		remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		in:     make(chan scripted, 4), out: make(chan []byte, 16), closed: make(chan struct{})}
}

func (c *scriptedStreamConn) Read(p []byte) (int, error) {
	select {
	case d := <-c.in:
		if d.err != nil {
			return 0, d.err
		}
		return copy(p, d.b), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *scriptedStreamConn) Write(p []byte) (int, error) {
	c.j.add("stream-write %s", describe(p))
	select {
	case c.out <- bytes.Clone(p):
		return len(p), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *scriptedStreamConn) Close() error {
	c.once.Do(func() {
		c.j.add("stream-close %s", c.remote)
		close(c.closed)
	})
	return nil
}

func (c *scriptedStreamConn) LocalAddr() net.Addr              { return c.local }
func (c *scriptedStreamConn) RemoteAddr() net.Addr             { return c.remote }
func (c *scriptedStreamConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedStreamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedStreamConn) SetWriteDeadline(time.Time) error { return nil }

// pionHarness is pion's server on one scripted UDP socket and one scripted listener.
type pionHarness struct {
	j        *journal
	udp      *scriptedPacketConn
	listener *scriptedListener
	relays   *scriptedRelays
}

func startPion(t *testing.T) *pionHarness {
	t.Helper()
	j := &journal{}
	h := &pionHarness{j: j, udp: newScriptedPacketConn(j), relays: &scriptedRelays{j: j},
		listener: &scriptedListener{j: j, accept: make(chan scriptedAccept, 4), closed: make(chan struct{})}}
	key := turn.GenerateAuthKey(contractUser, contractRealm, contractPass)
	srv, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: h.udp, RelayAddressGenerator: h.relays}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: h.listener, RelayAddressGenerator: h.relays}},
		LoggerFactory:     pionLogs{l: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Realm:             contractRealm,
		AuthHandler: func(username, realm string, _ net.Addr) ([]byte, bool) {
			j.add("auth %s %s", username, realm)
			return key, username == contractUser
		},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(src, dst net.Addr, _, _, _ string, relayAddr net.Addr, _ int) {
				j.add("alloc-created src=%T %s dst=%s relay=%s", src, src, dst, relayAddr)
			},
			OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) {
				j.add("alloc-deleted src=%s dst=%s", src, dst)
			},
			OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
				j.add("perm-created %s", peer)
			},
			OnChannelCreated: func(_, _ net.Addr, _, _, _ string, _, peer net.Addr, number uint16) {
				j.add("channel-created %#x %s", number, peer)
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

// contractClient speaks to pion through one scripted transport.
type contractClient struct {
	t     *testing.T
	send  func(b []byte)
	recv  chan []byte
	nonce string
	key   []byte
}

func (h *pionHarness) udpClient(t *testing.T) *contractClient {
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	return &contractClient{t: t, recv: h.udp.out, send: func(b []byte) { h.udp.in <- scripted{b: b, from: from} },
		key: turn.GenerateAuthKey(contractUser, contractRealm, contractPass)}
}

func (h *pionHarness) streamClient(t *testing.T, c *scriptedStreamConn) *contractClient {
	h.listener.accept <- scriptedAccept{c: c}
	t.Cleanup(func() { _ = c.Close() })
	return &contractClient{t: t, recv: c.out, send: func(b []byte) { c.in <- scripted{b: b} },
		key: turn.GenerateAuthKey(contractUser, contractRealm, contractPass)}
}

// roundTrip sends m and returns pion's answer to it (other messages are passed over).
func (c *contractClient) roundTrip(m *stun.Message) *stun.Message {
	c.t.Helper()
	c.send(m.Raw)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-c.recv:
			r := &stun.Message{Raw: b}
			if r.Decode() == nil && r.TransactionID == m.TransactionID {
				return r
			}
		case <-deadline:
			c.t.Fatalf("no answer to %v", m.Type)
			return nil
		}
	}
}

// request sends an authenticated request.
func (c *contractClient) request(setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	return c.roundTrip(c.build(setters...))
}

func (c *contractClient) build(setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	setters = append(setters, stun.NewUsername(contractUser), stun.NewRealm(contractRealm), stun.NewNonce(c.nonce),
		stun.MessageIntegrity(c.key), stun.Fingerprint)
	return mustBuild(c.t, setters...)
}

// allocate is the 401 dance and an Allocate; extra replaces REQUESTED-TRANSPORT UDP.
func (c *contractClient) allocate(extra ...stun.Setter) *stun.Message {
	c.t.Helper()
	first := c.roundTrip(mustBuild(c.t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()))
	var nonce stun.Nonce
	if errorCode(first) != 401 || nonce.GetFrom(first) != nil {
		c.t.Fatalf("first Allocate: %d, want a 401 with a NONCE", errorCode(first))
	}
	c.nonce = nonce.String()
	setters := append([]stun.Setter{stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()}, extra...)
	r := c.request(setters...)
	if errorCode(r) != 0 {
		c.t.Fatalf("Allocate: %d", errorCode(r))
	}
	return r
}

func grantedLifetime(t *testing.T, m *stun.Message) time.Duration {
	t.Helper()
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		t.Fatalf("%v without LIFETIME", m.Type)
	}
	return time.Duration(uint32(v[0])<<24|uint32(v[1])<<16|uint32(v[2])<<8|uint32(v[3])) * time.Second
}

// 1. pion reads a client socket from one goroutine, and handles a request completely
// (AuthHandler, allocation, event, response) before it reads again.
func TestPionContractSynchronousReadLoop(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	c.allocate()
	e := h.j.snapshot()
	auth := index(e, "auth "+contractUser+" "+contractRealm, 0)
	if auth < 0 {
		t.Fatalf("AuthHandler not called with the request's USERNAME and REALM: %q", e)
	}
	// The read that delivered the request returned last before the AuthHandler call;
	// the next read comes after everything pion did with it (wait for it: pion may not
	// be back in ReadFrom yet).
	delivered := -1
	for i := 0; i < auth; i++ {
		if strings.HasPrefix(e[i], "got ") {
			delivered = i
		}
	}
	next := h.j.waitFor(t, "read", delivered+1)
	e = h.j.snapshot()
	var missing []string
	for _, step := range []string{"auth ", "allocate-conn", "alloc-created", "write Allocate success response"} {
		if i := index(e, step, delivered); i < 0 || i > next {
			missing = append(missing, step)
		}
	}
	if missing != nil {
		t.Errorf("%q did not happen between the read that delivered the Allocate and the next read:\n  %s",
			missing, strings.Join(e, "\n  "))
	}
	if h.udp.overlap.Load() {
		t.Error("pion called ReadFrom on one socket from two goroutines at once")
	}
}

// 2. pion's read buffers are pionReadBufSize bytes; a datagram that fills the client
// socket's buffer is dropped, unanswered.
func TestPionContractReadBuffers(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	binding := func(padding int) *stun.Message {
		return mustBuild(t, stun.BindingRequest, stun.RawAttribute{Type: 0x8050, Value: make([]byte, padding)})
	}
	full := binding(pionReadBufSize - stunHeaderSize - 4) // header + attribute header + padding = the buffer
	if len(full.Raw) != pionReadBufSize {
		t.Fatalf("built %d bytes", len(full.Raw))
	}
	c.send(full.Raw)
	fits := binding(pionReadBufSize - stunHeaderSize - 8)
	if r := c.roundTrip(fits); r.Type != stun.BindingSuccess {
		t.Fatalf("a %d-byte Binding request: %v", len(fits.Raw), r.Type)
	}
	// The loop is synchronous: an answer to the full datagram would have come first.
	if n := strings.Count(strings.Join(h.j.snapshot(), "\n"), "write Binding success response"); n != 1 {
		t.Errorf("%d Binding answers; the datagram that filled pion's buffer was not dropped", n)
	}
	if got := h.udp.bufLen.Load(); got != pionReadBufSize {
		t.Errorf("pion reads client sockets into %d bytes, relay assumes %d (udpReadBufSize)", got, pionReadBufSize)
	}

	c.allocate()
	rc := h.relays.last(t)
	deadline := time.Now().Add(5 * time.Second)
	for rc.bufLen.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if got, least := rc.bufLen.Load(), int64(relayBufSize-channelDataHdrSize-3); got < least {
		t.Errorf("pion reads relay sockets into %d bytes; relay queues datagrams of up to %d for it", got, least)
	}
}

// 3. An error from a listener's ReadFrom or Accept ends pion's loop on it for good: its
// allocations close.
func TestPionContractReadErrorEndsLoop(t *testing.T) {
	t.Run("ReadFrom", func(t *testing.T) {
		h := startPion(t)
		c := h.udpClient(t)
		c.allocate()
		relay := h.relays.last(t).addr.String()
		h.udp.in <- scripted{err: errors.New("one bad datagram")}
		closed := h.j.waitFor(t, "relay-close "+relay, 0)
		if i := index(h.j.snapshot(), "read", closed); i >= 0 {
			t.Errorf("pion read the socket again after the error")
		}
	})
	t.Run("Accept", func(t *testing.T) {
		h := startPion(t)
		c := h.streamClient(t, newScriptedStreamConn(h.j, 40001))
		c.allocate()
		relay := h.relays.last(t).addr.String()
		h.listener.accept <- scriptedAccept{err: errors.New("too many open files")}
		closed := h.j.waitFor(t, "relay-close "+relay, 0)
		if i := index(h.j.snapshot(), "accept", closed); i >= 0 {
			t.Errorf("pion accepted again after the error")
		}
	})
}

// 4. The events that keep relay's hot state come before the success responses, and the
// allocation's relay address is the one AllocatePacketConn returned.
func TestPionContractEventsBeforeResponses(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	c.allocate()
	relay := h.relays.last(t).addr.String()
	e := h.j.snapshot()
	conn, created := index(e, "allocate-conn "+relay, 0), index(e, "alloc-created ", 0)
	if conn < 0 || created < conn || !strings.HasSuffix(e[created], "relay="+relay) {
		t.Errorf("AllocatePacketConn, then OnAllocationCreated with its address: %q", e)
	}
	if ok := index(e, "write Allocate success response", 0); ok < created {
		t.Errorf("Allocate answered before OnAllocationCreated: %q", e)
	}

	peer := netip.MustParseAddrPort("192.0.2.1:9")
	if r := c.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{peer}); errorCode(r) != 0 {
		t.Fatalf("CreatePermission: %d", errorCode(r))
	}
	e = h.j.snapshot()
	if ev, ok := index(e, "perm-created 192.0.2.1", 0), index(e, "write CreatePermission success response", 0); ev < 0 || ok < ev {
		t.Errorf("CreatePermission answered before OnPermissionCreated: %q", e)
	}

	peer = netip.MustParseAddrPort("192.0.2.2:9")
	if r := c.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4001), xorPeer{peer}); errorCode(r) != 0 {
		t.Fatalf("ChannelBind: %d", errorCode(r))
	}
	e = h.j.snapshot()
	if ev, ok := index(e, "channel-created 0x4001 "+peer.String(), 0), index(e, "write ChannelBind success response", 0); ev < 0 || ok < ev {
		t.Errorf("ChannelBind answered before OnChannelCreated: %q", e)
	}
}

// 5. pion reads the relay socket on its own goroutine without deadlines, sends to peers
// with a *net.UDPAddr, turns what it reads into Data indications written to the
// client socket, and closes the relay socket when the allocation ends.
func TestPionContractRelaySocketLifetime(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	c.allocate()
	rc := h.relays.last(t)
	peer := netip.MustParseAddrPort("192.0.2.1:9")
	if r := c.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{peer}); errorCode(r) != 0 {
		t.Fatalf("CreatePermission: %d", errorCode(r))
	}

	send := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{peer},
		stun.RawAttribute{Type: stun.AttrData, Value: []byte("to the peer")})
	c.send(send.Raw)
	select {
	case d := <-rc.sent:
		ua, ok := d.from.(*net.UDPAddr)
		if !ok || ua.AddrPort() != peer || string(d.b) != "to the peer" {
			t.Errorf("relay socket WriteTo(%q, %T %v), want a *net.UDPAddr %v", d.b, d.from, d.from, peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Send indication never reached the relay socket")
	}

	rc.in <- scripted{b: []byte("to the client"), from: net.UDPAddrFromAddrPort(peer)}
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case b := <-c.recv:
			if n, ok := relayedPayload(b); ok && describe(b) == "Data indication" {
				got = n == len("to the client")
			}
		case <-deadline:
			t.Fatal("data read from the relay socket did not reach the client as a Data indication")
		}
	}

	if r := c.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(0)); errorCode(r) != 0 {
		t.Fatalf("Refresh 0: %d", errorCode(r))
	}
	h.j.waitFor(t, "relay-close "+rc.addr.String(), 0)
	h.j.waitFor(t, "alloc-deleted src=127.0.0.1:40000", 0)
	if n := rc.deadlines.Load(); n != 0 {
		t.Errorf("pion set %d deadlines on the relay socket; relayConn ignores them", n)
	}
}

// 9. Closing the relay socket from outside pion ends the allocation: pion deletes it and
// says so. (Its answer to a Refresh without an allocation is none at all: the gate
// answers 437 before pion sees one.)
func TestPionContractRelaySocketClosed(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	c.allocate()
	rc := h.relays.last(t)
	_ = rc.Close()
	h.j.waitFor(t, "alloc-deleted src=127.0.0.1:40000", 0)
}

// 6. A TCP client's allocation is known by its connection's addresses (the client's a
// *net.TCPAddr); pion answers with Write, and when Read fails it deletes the allocation
// and closes the connection.
func TestPionContractStreamConnection(t *testing.T) {
	h := startPion(t)
	sc := newScriptedStreamConn(h.j, 40002)
	c := h.streamClient(t, sc)
	c.allocate()
	e := h.j.snapshot()
	if i := index(e, "alloc-created src=*net.TCPAddr 127.0.0.1:40002 dst=127.0.0.1:3478 ", 0); i < 0 {
		t.Errorf("OnAllocationCreated for a TCP client: %q", e)
	}
	if index(e, "stream-write Allocate success response", 0) < 0 {
		t.Errorf("pion did not answer with the connection's Write: %q", e)
	}
	relay := h.relays.last(t).addr.String()
	sc.in <- scripted{err: io.EOF}
	h.j.waitFor(t, "alloc-deleted src=127.0.0.1:40002 dst=127.0.0.1:3478", 0)
	h.j.waitFor(t, "relay-close "+relay, 0)
	h.j.waitFor(t, "stream-close 127.0.0.1:40002", 0)
}

// 7. pion grants a LIFETIME under an hour as asked and its default from an hour up, and
// checks MESSAGE-INTEGRITY over the bytes it is handed: clampLifetime's re-signed
// request passes, an altered one without a new signature gets 400.
func TestPionContractLifetime(t *testing.T) {
	h := startPion(t)
	c := h.udpClient(t)
	under := pionMaxLifetime - time.Second
	if got := grantedLifetime(t, c.allocate(lifetime(under))); got != under {
		t.Errorf("asked %v, granted %v", under, got)
	}
	refresh := func(d time.Duration) *stun.Message {
		return c.build(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(d))
	}
	if got := grantedLifetime(t, c.roundTrip(refresh(pionMaxLifetime))); got != pionDefaultLifetime {
		t.Errorf("asked %v, granted %v, want pion's default %v", pionMaxLifetime, got, pionDefaultLifetime)
	}

	m := refresh(2 * pionMaxLifetime)
	clampLifetime(m.Raw, lifetimeSeconds(time.Hour), c.key)
	if r := c.roundTrip(m); errorCode(r) != 0 {
		t.Errorf("the Refresh clampLifetime signed again: %d", errorCode(r))
	} else if got := grantedLifetime(t, r); got != under {
		t.Errorf("the Refresh clampLifetime capped: granted %v, want %v", got, under)
	}

	m = refresh(2 * pionMaxLifetime)
	clampLifetime(m.Raw, lifetimeSeconds(time.Hour), []byte("not the key"))
	if code := errorCode(c.roundTrip(m)); code != 400 {
		t.Errorf("a Refresh altered without its key's signature: %d, want 400", code)
	}
}

// TestPionContractNonces pins contract 8: unauthenticated requests in quick succession,
// from different clients, are challenged with one nonce (two, should the burst cross a
// minute), and a nonce pion handed out is accepted.
func TestPionContractNonces(t *testing.T) {
	h := startPion(t)
	nonces := map[string]bool{}
	for i := range 50 {
		from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41000 + i}
		c := &contractClient{t: t, recv: h.udp.out, send: func(b []byte) { h.udp.in <- scripted{b: b, from: from} }}
		r := c.roundTrip(mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()))
		var nonce stun.Nonce
		if errorCode(r) != 401 || nonce.GetFrom(r) != nil {
			t.Fatalf("unauthenticated Allocate %d: %d, want a 401 with a NONCE", i, errorCode(r))
		}
		nonces[nonce.String()] = true
	}
	if len(nonces) > 2 {
		t.Fatalf("50 challenges within a second carried %d different nonces: pion makes them per request now, "+
			"and the nonce book (nonces.go) must change", len(nonces))
	}
	h.udpClient(t).allocate() // the 401 dance with such a nonce succeeds
}
