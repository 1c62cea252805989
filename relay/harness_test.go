package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"go.uber.org/goleak"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/skipnote"
	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		skipnote.Report("relay")
		os.Exit(code)
	}))
}

const (
	testRealm  = "test.relay"
	testSecret = "first-secret-for-tests"
)

// testServer is a relay on 127.0.0.1 with free ports, stopped by t.Cleanup.
type testServer struct {
	*Server
	cfg     *config.Config
	metrics *metrics.Metrics
	auth    *auth.Authenticator
}

func startServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startServerLogging(t, mutate, logger)
}

// startServerLogging is startServer with the given logger.
func startServerLogging(t testing.TB, mutate func(*config.Config), logger *slog.Logger) *testServer {
	t.Helper()
	return startServerControl(t, mutate, logger, nil)
}

// startServerControl is startServerLogging with an operator control (nil: none).
func startServerControl(t testing.TB, mutate func(*config.Config), logger *slog.Logger, ctl Control) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Realm = testRealm
	cfg.TURN.UDP = []string{"127.0.0.1:0"}
	cfg.TURN.TCP = []string{"127.0.0.1:0"}
	cfg.TURN.RelayIP = netip.MustParseAddr("127.0.0.1")
	cfg.TURN.RelayPorts = config.PortRange{Min: 61000, Max: 61999}
	cfg.TURN.UDPSockets = 2
	cfg.Auth.Secrets = []string{testSecret}
	cfg.Metrics.Listen = ""
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	a, err := auth.New(auth.Options{Secrets: cfg.Auth.Secrets, MaxTTL: cfg.Auth.MaxTTL, Users: cfg.Auth.Users})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	s, err := New(Options{Config: cfg, Auth: a, Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if ctl != nil {
		s.SetControl(ctl)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testServer{Server: s, cfg: cfg, metrics: m, auth: a}
}

func (s *testServer) addr(transport string) string {
	return s.Addrs(transport)[0].String()
}

// creds mints valid credentials for user.
func (s *testServer) creds(t testing.TB, user string) (string, string) {
	t.Helper()
	c, err := s.auth.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.Username, c.Password
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, cond)
}

// rawClient speaks STUN by hand over UDP, TCP or TLS, to test exact answers.
type rawClient struct {
	t      testing.TB
	conn   net.Conn
	stream bool
	buf    []byte
}

func dialRaw(t testing.TB, network, addr string, tlsConf *tls.Config) *rawClient {
	t.Helper()
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = tls.Dial("tcp", addr, tlsConf)
	} else {
		c, err = net.Dial(network, addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, conn: c, stream: network != "udp", buf: make([]byte, 4096)}
}

// roundTrip sends m and returns the response with the same transaction ID, or nil when
// nothing comes back within the timeout.
func (c *rawClient) roundTrip(m *stun.Message, timeout time.Duration) *stun.Message {
	c.t.Helper()
	if _, err := c.conn.Write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		_ = c.conn.SetReadDeadline(deadline)
		var raw []byte
		if c.stream {
			hdr := make([]byte, 20)
			if _, err := io.ReadFull(c.conn, hdr); err != nil {
				if isTimeout(err) {
					return nil
				}
				c.t.Fatal(err)
			}
			body := make([]byte, int(hdr[2])<<8|int(hdr[3]))
			if _, err := io.ReadFull(c.conn, body); err != nil {
				c.t.Fatal(err)
			}
			raw = append(hdr, body...)
		} else {
			n, err := c.conn.Read(c.buf)
			if err != nil {
				if isTimeout(err) {
					return nil
				}
				c.t.Fatal(err)
			}
			raw = append([]byte(nil), c.buf[:n]...)
		}
		resp := &stun.Message{Raw: raw}
		if err := resp.Decode(); err != nil {
			continue
		}
		if resp.TransactionID == m.TransactionID {
			return resp
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// mustBuild builds a request with a fresh transaction ID.
func mustBuild(t testing.TB, setters ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func errorCode(m *stun.Message) int {
	if m == nil {
		return -1 // no answer at all
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return 0 // success
	}
	return int(ec.Code)
}

// session is an authenticated TURN client built from rawClient.
type session struct {
	*rawClient
	user, realm, nonce string
	key                []byte
}

// allocate performs the 401 dance and an Allocate with the given credentials and extra
// attributes, returning the final response.
func (c *rawClient) allocate(user, pass string, extra ...stun.Setter) (*session, *stun.Message) {
	c.t.Helper()
	first := c.roundTrip(mustBuild(c.t, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		requestedUDP()), 2*time.Second)
	if errorCode(first) != 401 {
		c.t.Fatalf("first Allocate: want 401 challenge, got %d", errorCode(first))
	}
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(first); err != nil {
		c.t.Fatal("401 without REALM")
	}
	if err := nonce.GetFrom(first); err != nil {
		c.t.Fatal("401 without NONCE")
	}
	s := &session{rawClient: c, user: user, realm: realm.String(), nonce: nonce.String(),
		key: auth.LongTermKey(user, realm.String(), pass)}
	setters := append([]stun.Setter{stun.NewType(stun.MethodAllocate, stun.ClassRequest)}, extra...)
	if len(extra) == 0 {
		setters = append(setters, requestedUDP())
	}
	return s, s.request(setters...)
}

// request sends an authenticated request (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY).
func (s *session) request(setters ...stun.Setter) *stun.Message {
	s.t.Helper()
	setters = append(setters, stun.NewUsername(s.user), stun.NewRealm(s.realm), stun.NewNonce(s.nonce),
		stun.MessageIntegrity(s.key), stun.Fingerprint)
	return s.roundTrip(mustBuild(s.t, setters...), 2*time.Second)
}

type requestedTransport byte

func (r requestedTransport) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{byte(r), 0, 0, 0})
	return nil
}

func requestedUDP() stun.Setter { return requestedTransport(17) }

type channelNumber uint16

func (n channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0})
	return nil
}

type xorPeer struct{ ap netip.AddrPort }

func (p xorPeer) AddTo(m *stun.Message) error {
	a := stun.XORMappedAddress{IP: p.ap.Addr().AsSlice(), Port: int(p.ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

// selfSignedTLS writes a certificate for 127.0.0.1 and returns the file paths and a
// client config trusting it.
func selfSignedTLS(t *testing.T) (certFile, keyFile string, client *tls.Config) {
	return testcert.Write(t)
}
