package wsconn

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// NewTLSListener serves TLS on inner's connections with config, so that a wss
// connection can later leave its tls.Conn for a poller (Conn.Serve): an idle one then
// holds neither a goroutine nor tls.Conn's buffers (tlsrecord.go). Each accepted
// connection gets its own copy of config, with session tickets off and a key log that
// keeps the connection's traffic secrets for the record layer. The handshake is
// crypto/tls's, run by net/http with its deadlines as for any TLS listener.
//
// Session tickets are off because a TLS 1.3 server sends them in its first flight
// under the application key, records this layer cannot tell from the handshake's:
// counting them wrong would reuse a nonce. Without tickets a returning client makes a
// full handshake.
func NewTLSListener(inner net.Listener, config *tls.Config) net.Listener {
	return &tlsListener{Listener: inner, config: config}
}

type tlsListener struct {
	net.Listener
	config *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ServerTLS(c, l.config), nil
}

// ServerTLS is what NewTLSListener does to each connection it accepts, for a listener
// of someone else's (a port shared with TURN, internal/portmux): the server side of
// TLS on c with its own copy of config, whose connection a Conn can take over after
// the handshake. A GetConfigForClient in config gets the same treatment for the
// configuration it returns.
func ServerTLS(c net.Conn, config *tls.Config) *tls.Conn {
	s := &tlsSock{Conn: c}
	cfg := config.Clone()
	s.prepare(cfg)
	if get := cfg.GetConfigForClient; get != nil {
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(h)
			if c == nil || err != nil {
				return c, err
			}
			c = c.Clone()
			s.prepare(c)
			return c, nil
		}
	}
	return tls.Server(s, cfg)
}

// prepare makes cfg the configuration of s's connection: no session tickets, and the
// key log that keeps the traffic secrets (see NewTLSListener).
func (s *tlsSock) prepare(cfg *tls.Config) {
	cfg.SessionTicketsDisabled = true
	cfg.KeyLogWriter = (*tlsKeyLog)(s)
}

// KeepTLS leaves a connection from ServerTLS to its tls.Conn for good, when it turned
// out not to be a WebSocket (a TURN client on a shared port): the record counting
// stops and the secrets kept for a takeover are wiped.
func KeepTLS(tc *tls.Conn) {
	if s, ok := tc.NetConn().(*tlsSock); ok {
		s.passThrough()
	}
}

// PeekedTLS is a connection from ServerTLS whose first plaintext bytes were read by a
// router to choose the service (a shared port: TURN or HTTPS, for a client that named
// no protocol in ALPN); reads return them first. Once they are read, a Conn made from
// it (New) works on the tls.Conn itself, so that a wss socket still goes to a poller.
type PeekedTLS struct {
	*tls.Conn
	prefix []byte
}

// NewPeekedTLS returns tc with prefix put back in front of what it reads.
func NewPeekedTLS(tc *tls.Conn, prefix []byte) *PeekedTLS {
	return &PeekedTLS{Conn: tc, prefix: prefix}
}

func (p *PeekedTLS) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// tlsSock is the connection under a tls.Conn from NewTLSListener. It passes reads and
// writes through and follows the record stream both ways, so that the connection can
// be taken over after the handshake:
//   - reads end at record boundaries, so that crypto/tls never holds bytes of a record
//     it has not yet decrypted; the bytes of the record being read are kept (rec), to
//     be completed by the record layer if the connection is taken over mid-record;
//   - records are counted: those read and written after the server's first flight
//     (the one whose records are encrypted) are under the application keys.
type tlsSock struct {
	net.Conn

	// off: stop following (the connection stays with tls.Conn).
	off atomic.Bool
	// shut: reads return errWouldBlock without reading, so that tls.Conn gives up what
	// it holds without taking more.
	shut atomic.Bool

	// Read side, under tls.Conn's read lock.
	rec      []byte // the bytes of the record being read
	appIn    uint64 // encrypted records read after the flight
	flightIn bool   // copy of flightOut when the record began

	// Write side, under tls.Conn's write lock.
	whdr      [recordHeaderLen]byte
	whn       int // header bytes seen of the record being written
	wleft     int // body bytes left of the record being written
	appOut    uint64
	flightOut atomic.Bool // the flight went out: what is written now is under the application key
	// last is a copy of the last record written under the application key, when it
	// came in a write of its own of at most maxLastRecord bytes (the 101 response):
	// takeOver checks that it opens under the key and sequence number the record
	// layer would go on from.
	last []byte

	mu                         sync.Mutex // the key log: written on the handshake's goroutine
	clientSecret, serverSecret []byte
	forgotten                  bool // the secrets were taken or wiped: the key log keeps no more
}

// errWouldBlock is what a read returns when there is nothing to read without waiting:
// a temporary net.Error, which crypto/tls passes on without failing the connection
// (conn.go, readRecordOrCCS: "if e, ok := err.(net.Error); !ok || !e.Temporary()";
// TestTLSTemporaryErrorKeepsConn pins it).
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "wsconn: read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (s *tlsSock) Read(b []byte) (int, error) {
	if s.off.Load() {
		return s.Conn.Read(b)
	}
	if s.shut.Load() {
		return 0, errWouldBlock
	}
	// Up to the end of the header, then to the end of the record.
	want := recordHeaderLen - len(s.rec)
	if len(s.rec) >= recordHeaderLen {
		want = recordHeaderLen + recordLen(s.rec) - len(s.rec)
	}
	if len(s.rec) == 0 {
		s.flightIn = s.flightOut.Load()
	}
	n, err := s.Conn.Read(b[:min(len(b), want)])
	if n > 0 {
		s.rec = append(s.rec, b[:n]...)
		if len(s.rec) >= recordHeaderLen && len(s.rec) == recordHeaderLen+recordLen(s.rec) {
			// The record is whole: crypto/tls opens it now.
			if s.flightIn && s.rec[0] == recordTypeApplication {
				s.appIn++
			}
			s.rec = s.rec[:0]
			if cap(s.rec) > 1024 {
				s.rec = nil // a keep-alive HTTPS connection does not keep its ClientHello's size
			}
		}
	}
	return n, err
}

// recordLen is the body length in a record header.
func recordLen(h []byte) int { return int(h[3])<<8 | int(h[4]) }

// maxLastRecord bounds the copy of the last record written (tlsSock.last): the 101
// response to an upgrade fits in a record of a few hundred bytes.
const maxLastRecord = 1024

func (s *tlsSock) Write(b []byte) (int, error) {
	if !s.off.Load() {
		app := s.flightOut.Load()
		s.count(b)
		if app && len(b) <= maxLastRecord && len(b) >= recordHeaderLen && len(b) == recordHeaderLen+recordLen(b) {
			s.last = append(s.last[:0], b...)
		} else {
			s.last = s.last[:0]
		}
	}
	return s.Conn.Write(b)
}

// count follows the records in b. TLS 1.3's server flight is one write (crypto/tls
// buffers it), the first with an encrypted record; the records of every later write
// are under the application key.
func (s *tlsSock) count(b []byte) {
	flight := false
	for len(b) > 0 {
		if s.wleft > 0 {
			k := min(s.wleft, len(b))
			s.wleft -= k
			b = b[k:]
			continue
		}
		k := copy(s.whdr[s.whn:], b)
		s.whn += k
		b = b[k:]
		if s.whn < recordHeaderLen {
			return
		}
		s.whn = 0
		s.wleft = recordLen(s.whdr[:])
		switch {
		case s.flightOut.Load():
			s.appOut++
		case s.whdr[0] == recordTypeApplication:
			flight = true
		}
	}
	if flight {
		s.flightOut.Store(true)
	}
}

// passThrough leaves the connection to tls.Conn for good.
func (s *tlsSock) passThrough() {
	s.off.Store(true)
	s.rec, s.last = nil, nil
	s.forget()
}

// Close wipes the secrets the key log kept, if the connection was never taken over
// (plain HTTPS, a refused upgrade, a failed handshake), then closes the socket.
func (s *tlsSock) Close() error {
	s.forget()
	return s.Conn.Close()
}

// forget wipes the key log's secrets; it keeps none that come later.
func (s *tlsSock) forget() {
	s.mu.Lock()
	clear(s.clientSecret)
	clear(s.serverSecret)
	s.clientSecret, s.serverSecret = nil, nil
	s.forgotten = true
	s.mu.Unlock()
}

// tlsKeyLog is the connection's key log (NSS format, one line per write): it keeps
// the TLS 1.3 application traffic secrets and ignores the rest.
type tlsKeyLog tlsSock

func (k *tlsKeyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &k.clientSecret
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &k.serverSecret
	default:
		return len(line), nil
	}
	secret, err := hex.AppendDecode(nil, f[2])
	if err != nil {
		return len(line), nil
	}
	k.mu.Lock()
	if k.forgotten {
		clear(secret)
	} else {
		clear(*dst)
		*dst = secret
	}
	k.mu.Unlock()
	return len(line), nil
}

// takeOver makes the record layer for a TLS 1.3 connection on tc, whose handshake is
// complete, and takes what tc still holds: plaintext it decrypted that nobody read
// (appended to plain) and the start of a record it did not finish reading (kept by
// the record layer). From then on tc must not be used: it reads nothing more (shut).
// errNotTLS13 leaves the connection to tc as it was; any other error ends it.
//
// The write side is checked before anything is taken: the last record tc wrote (the
// 101 response) must open under the key log's server secret at the sequence number
// before the one the record layer would go on from. It does not when crypto/tls wrote
// records this count does not know of, or moved to its next key: a client that asks
// for a KeyUpdate before its upgrade request makes crypto/tls answer and seal the 101
// under the next key at sequence number 0, which a record layer going on from the
// first key would seal under again after the client's next request, a reused nonce.
// Such a connection stays with tc (errNotTLS13). A client that sent a KeyUpdate of its
// own (not asking for ours) before the upgrade has moved on to keys the record layer
// does not have: its next record fails to open and the connection ends; the sequence
// numbers under the old keys only grew, so no nonce is used twice.
func (s *tlsSock) takeOver(tc *tls.Conn, plain []byte) (*tlsRecords, []byte, error) {
	cs := tc.ConnectionState()
	s.mu.Lock()
	cSecret, sSecret := s.clientSecret, s.serverSecret
	s.clientSecret, s.serverSecret = nil, nil
	s.forgotten = true
	s.mu.Unlock()
	defer clear(cSecret)
	defer clear(sSecret)
	r, err := newTLSRecords(cs.CipherSuite, cSecret, sSecret, 0, 0)
	if err != nil || cs.Version != tls.VersionTLS13 || !cs.HandshakeComplete || !s.flightOut.Load() ||
		s.appOut == 0 || !r.sealedOut(s.last, s.appOut-1) {
		return nil, plain, errNotTLS13
	}
	s.last = nil
	s.shut.Store(true)
	var buf [4096]byte
	for {
		n, err := tc.Read(buf[:]) // under tc's read lock, after every read before
		plain = append(plain, buf[:n]...)
		if err != nil {
			// errWouldBlock: tc holds no more. Anything else (close_notify, a bad
			// record) ends the connection.
			if !errors.Is(err, errWouldBlock) {
				return nil, plain, err
			}
			break
		}
	}
	if s.appIn == 0 {
		return nil, plain, errors.New("wsconn: no Finished from the client")
	}
	// The client's first encrypted record after our flight was its Finished, under the
	// handshake key: a client sends it in one record (no client certificate is asked).
	// Every record written after the flight was under the application key.
	r.in.seq, r.out.seq = s.appIn-1, s.appOut
	if len(s.rec) > 0 {
		r.rin = append(make([]byte, 0, max(recordHeaderLen, len(s.rec))), s.rec...)
	}
	s.rec = nil
	return r, plain, nil
}
