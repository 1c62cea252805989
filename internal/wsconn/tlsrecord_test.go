package wsconn

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testcert"
)

// recordPair is the two ends of one TLS 1.3 connection's record layer, from made-up
// secrets: what client seals, server opens, and the other way.
func recordPair(t testing.TB, suite uint16) (client, server *tlsRecords) {
	t.Helper()
	n := 32
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		n = 48
	}
	cs, ss := make([]byte, n), make([]byte, n)
	_, _ = rand.Read(cs)
	_, _ = rand.Read(ss)
	client, err := newTLSRecords(suite, ss, cs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	server, err = newTLSRecords(suite, cs, ss, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

var suites = []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256}

// openAll feeds chunks to r and returns the application data delivered, the number of
// KeyUpdates the client asked for, and the first error.
func openAll(r *tlsRecords, chunks [][]byte) (got []byte, updates int, err error) {
	for _, c := range chunks {
		_, err = r.open(bytes.Clone(c), func(p []byte) bool {
			got = append(got, p...)
			return true
		}, func(requested bool) error {
			if !requested {
				return nil
			}
			updates++
			_, err := r.sealKeyUpdate(nil, false)
			return err
		})
		if err != nil {
			return got, updates, err
		}
	}
	return got, updates, nil
}

// TestTLSRecordsSplitAtEveryByte: a stream of records (application data, an empty
// record, a KeyUpdate that asks for ours, data under the new key) arrives whole
// whatever the reads cut it into: at every byte, in two pieces, and one byte at a time;
// a partial record is held between reads and let go once complete.
func TestTLSRecordsSplitAtEveryByte(t *testing.T) {
	for _, suite := range suites {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			client, _ := recordPair(t, suite)
			cs, ss := bytes.Clone(client.out.secret[:client.hashLen]), bytes.Clone(client.in.secret[:client.hashLen])
			fresh := func() *tlsRecords {
				r, err := newTLSRecords(suite, cs, ss, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			var stream []byte
			seal := func(p []byte) {
				var err error
				if stream, err = client.seal(stream, p, recordTypeApplication); err != nil {
					t.Fatal(err)
				}
			}
			seal([]byte("first message"))
			seal(nil) // an empty record
			seal(bytes.Repeat([]byte("x"), 300))
			var err error
			if stream, err = client.sealKeyUpdate(stream, true); err != nil {
				t.Fatal(err)
			}
			seal([]byte("under the next key"))
			want := "first message" + strings.Repeat("x", 300) + "under the next key"

			for i := 0; i <= len(stream); i++ {
				r := fresh()
				got, updates, err := openAll(r, [][]byte{stream[:i], stream[i:]})
				if err != nil || string(got) != want || updates != 1 {
					t.Fatalf("split at %d of %d: %q, %d updates, %v", i, len(stream), got, updates, err)
				}
				if r.rin != nil {
					t.Fatalf("split at %d: a partial record is still held after the last one", i)
				}
			}
			r := fresh()
			got, updates, err := openAll(r, chunk(stream, 1))
			if err != nil || string(got) != want || updates != 1 {
				t.Fatalf("byte by byte: %q, %d updates, %v", got, updates, err)
			}

			// A message longer than a record is sealed as several, and read back whole
			// from reads of any size.
			big := make([]byte, 3*maxPlaintext+100)
			_, _ = rand.Read(big)
			c2, s2 := recordPair(t, suite)
			sealed, err := c2.seal(nil, big, recordTypeApplication)
			if err != nil {
				t.Fatal(err)
			}
			if c2.out.seq != 4 {
				t.Fatalf("%d bytes sealed as %d records, want 4", len(big), c2.out.seq)
			}
			got, _, err = openAll(s2, chunk(sealed, 1000))
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("long message: %d of %d bytes, %v", len(got), len(big), err)
			}
		})
	}
}

// TestTLSRecordsRefuseBadInput: what a TLS 1.3 record layer must refuse fails with the
// alert RFC 8446 names, never delivers the record, and never panics.
func TestTLSRecordsRefuseBadInput(t *testing.T) {
	seal := func(c *tlsRecords, p []byte, typ byte) []byte {
		b, err := c.seal(nil, p, typ)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name  string
		make  func(c *tlsRecords) []byte
		alert byte
	}{
		{"tampered ciphertext", func(c *tlsRecords) []byte {
			b := seal(c, []byte("hello"), recordTypeApplication)
			b[7] ^= 1
			return b
		}, alertBadRecordMAC},
		{"tampered header", func(c *tlsRecords) []byte {
			b := seal(c, []byte("hello"), recordTypeApplication)
			b[2] = 1 // version 0x0301
			return b
		}, alertIllegalParameter},
		{"replayed record", func(c *tlsRecords) []byte {
			b := seal(c, []byte("hello"), recordTypeApplication)
			return append(b, b...)
		}, alertBadRecordMAC},
		{"unprotected record", func(*tlsRecords) []byte { return []byte{recordTypeHandshake, 3, 3, 0, 1, 0} }, alertUnexpectedMessage},
		{"change_cipher_spec after the handshake", func(*tlsRecords) []byte { return []byte{20, 3, 3, 0, 1, 1} }, alertUnexpectedMessage},
		{"record too long", func(*tlsRecords) []byte { return []byte{recordTypeApplication, 3, 3, 0x41, 0x01} }, alertRecordOverflow},
		{"record shorter than its tag", func(*tlsRecords) []byte { return []byte{recordTypeApplication, 3, 3, 0, 3, 1, 2, 3} }, alertBadRecordMAC},
		{"plaintext too long", func(c *tlsRecords) []byte {
			// Sealed by hand: 16385 bytes of content in one record.
			a, _ := c.newAEAD(&c.out)
			p := append(make([]byte, maxPlaintext+1), recordTypeApplication)
			n := len(p) + a.Overhead()
			h := []byte{recordTypeApplication, 3, 3, byte(n >> 8), byte(n)}
			return a.Seal(h, c.out.nextNonce(), p, h)
		}, alertRecordOverflow},
		{"only padding", func(c *tlsRecords) []byte {
			b, err := c.seal(nil, nil, 0) // content type 0: all zeros inside
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, alertUnexpectedMessage},
		{"unknown content type", func(c *tlsRecords) []byte { return seal(c, []byte("x"), 99) }, alertUnexpectedMessage},
		{"NewSessionTicket from a client", func(c *tlsRecords) []byte {
			return seal(c, []byte{4, 0, 0, 1, 0}, recordTypeHandshake)
		}, alertUnexpectedMessage},
		{"KeyUpdate not at the end of its record", func(c *tlsRecords) []byte {
			return seal(c, []byte{typeKeyUpdate, 0, 0, 1, 0, typeKeyUpdate, 0, 0, 1, 0}, recordTypeHandshake)
		}, alertUnexpectedMessage},
		{"malformed KeyUpdate", func(c *tlsRecords) []byte {
			return seal(c, []byte{typeKeyUpdate, 0, 0, 1, 2}, recordTypeHandshake)
		}, alertDecodeError},
		{"handshake message split across records", func(c *tlsRecords) []byte {
			return append(seal(c, []byte{typeKeyUpdate, 0}, recordTypeHandshake), seal(c, []byte{0, 1, 0}, recordTypeHandshake)...)
		}, alertUnexpectedMessage},
		{"empty records without end", func(c *tlsRecords) []byte {
			var b []byte
			for range maxUselessRecords + 1 {
				b = append(b, seal(c, nil, recordTypeApplication)...)
			}
			return b
		}, alertUnexpectedMessage},
		{"fatal alert from the client", func(c *tlsRecords) []byte { return seal(c, []byte{2, 40}, recordTypeAlert) }, alertNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
			got, _, err := openAll(server, [][]byte{tc.make(client)})
			var re *recordError
			if !errors.As(err, &re) || re.alert != tc.alert {
				t.Fatalf("error %v, want alert %d", err, tc.alert)
			}
			if len(got) > 0 && tc.name != "replayed record" {
				t.Errorf("delivered %q", got)
			}
		})
	}

	client, server := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	b := seal(client, []byte("bye"), recordTypeApplication)
	b = append(b, seal(client, []byte{1, alertCloseNotify}, recordTypeAlert)...)
	got, _, err := openAll(server, [][]byte{b})
	if string(got) != "bye" || !errors.Is(err, errCloseNotify) {
		t.Fatalf("data then close_notify: %q, %v", got, err)
	}
}

// recordConn is a client's net.Conn that, after crypto/tls's client handshake,
// speaks TLS records through this package's record layer, to send what crypto/tls
// will not: a KeyUpdate that asks for the peer's, records cut anywhere.
type recordConn struct {
	net.Conn // the TCP connection
	r        *tlsRecords
	plain    []byte // received, not yet read
	err      error
	split    int // write at most this many bytes per write (0: all at once)
}

// dialRecords connects to addr over TLS 1.3 with config, and takes the connection
// over from crypto/tls once the handshake is done: the client's Finished went under
// the handshake key and a server without session tickets sends nothing after its
// flight, so both directions start at sequence number 0.
func dialRecords(t testing.TB, addr string, config *tls.Config) *recordConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	keys := &tlsSock{}
	config = config.Clone()
	config.MinVersion = tls.VersionTLS13
	config.KeyLogWriter = (*tlsKeyLog)(keys)
	tc := tls.Client(c, config)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	r, err := newTLSRecords(tc.ConnectionState().CipherSuite, keys.serverSecret, keys.clientSecret, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &recordConn{Conn: c, r: r}
}

func (rc *recordConn) Read(b []byte) (int, error) {
	for len(rc.plain) == 0 {
		if rc.err != nil {
			return 0, rc.err
		}
		buf := make([]byte, 64<<10)
		n, err := rc.Conn.Read(buf)
		if n > 0 {
			_, oerr := rc.r.open(buf[:n], func(p []byte) bool {
				rc.plain = append(rc.plain, p...)
				return true
			}, func(requested bool) error {
				if requested {
					return rc.writeKeyUpdate(false)
				}
				return nil
			})
			switch {
			case errors.Is(oerr, errCloseNotify):
				rc.err = io.EOF
			case oerr != nil:
				rc.err = oerr
			}
		}
		if err != nil && rc.err == nil {
			rc.err = err
		}
	}
	n := copy(b, rc.plain)
	rc.plain = rc.plain[n:]
	return n, nil
}

func (rc *recordConn) Write(b []byte) (int, error) {
	sealed, err := rc.r.seal(nil, b, recordTypeApplication)
	if err != nil {
		return 0, err
	}
	return len(b), rc.writeRaw(sealed)
}

func (rc *recordConn) writeRaw(b []byte) error {
	step := len(b)
	if rc.split > 0 {
		step = rc.split
	}
	for len(b) > 0 {
		k := min(step, len(b))
		if _, err := rc.Conn.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// writeKeyUpdate sends a KeyUpdate and moves to the next write key; request asks the
// peer to update its own.
func (rc *recordConn) writeKeyUpdate(request bool) error {
	b, err := rc.r.sealKeyUpdate(nil, request)
	if err != nil {
		return err
	}
	return rc.writeRaw(b)
}

// TestTLSRecordsKeyUpdateInterop: against crypto/tls's server, this record layer
// (as a client) sends and reads application data, asks for KeyUpdates and follows
// crypto/tls's own to the next keys: the key schedule and the record format are
// crypto/tls's. crypto/tls picks AES-128-GCM where both sides have AES instructions;
// the test runs itself again with them hidden (GODEBUG=cpu.aes=off) for ChaCha20.
func TestTLSRecordsKeyUpdateInterop(t *testing.T) {
	suite := keyUpdateInterop(t)
	if os.Getenv("WSCONN_INTEROP_CHILD") != "" || suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSRecordsKeyUpdateInterop$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "WSCONN_INTEROP_CHILD=1", "GODEBUG=cpu.aes=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("without AES instructions: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("negotiated TLS_CHACHA20_POLY1305_SHA256")) {
		t.Fatalf("without AES instructions ChaCha20 was not negotiated:\n%s", out)
	}
}

func keyUpdateInterop(t *testing.T) uint16 {
	serverConf, client := testcert.Configs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		server := serverConf.Clone()
		server.SessionTicketsDisabled = true
		tc := tls.Server(c, server)
		_, err = io.Copy(tc, tc) // echo
		done <- err
	}()
	rc := dialRecords(t, ln.Addr().String(), client)
	t.Logf("negotiated %s", tls.CipherSuiteName(rc.r.suite))
	echo := func(msg string) {
		t.Helper()
		if _, err := rc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(rc, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	echo("before any update")
	for i := range 3 {
		if err := rc.writeKeyUpdate(true); err != nil {
			t.Fatal(err)
		}
		echo(fmt.Sprintf("after update %d", i+1))
	}
	if err := rc.writeKeyUpdate(false); err != nil {
		t.Fatal(err)
	}
	echo(strings.Repeat("after an update not requested ", 1000))
	if rc.r.in.seq == 0 || rc.r.out.seq == 0 {
		t.Fatalf("sequence numbers in %d out %d", rc.r.in.seq, rc.r.out.seq)
	}
	_ = rc.Conn.Close()
	if err := <-done; err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Logf("server: %v", err)
	}
	return rc.r.suite
}

// BenchmarkTLSRecords: sealing and opening a 650-byte message (a PeerJS OFFER) on a
// busy connection, whose AEADs are kept: no allocation.
func BenchmarkTLSRecords(b *testing.B) {
	client, server := recordPair(b, tls.TLS_AES_128_GCM_SHA256)
	msg := bytes.Repeat([]byte("o"), 650)
	buf := make([]byte, 0, 1024)
	deliver := func([]byte) bool { return true }
	noUpdate := func(bool) error { return nil }
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		rec, err := client.seal(buf[:0], msg, recordTypeApplication)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := server.open(rec, deliver, noUpdate); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTLSRecordsWriteKeyLimit: the record layer moves to its next write key (a
// KeyUpdate not asking for the client's) before it seals more records under one key
// than RFC 8446 5.5 allows for AES-GCM, so that a long-lived connection never reaches
// the limit nor wraps its sequence number; a sequence number that would wrap is
// refused, never used again.
func TestTLSRecordsWriteKeyLimit(t *testing.T) {
	client, server := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	server.out.seq, client.in.seq = maxRecordsPerKey-1, maxRecordsPerKey-1
	first := server.out.secret
	var stream []byte
	for _, msg := range []string{"last under the first key", "under the next key"} {
		var err error
		if stream, err = server.sealApplication(stream, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if server.out.secret == first || server.out.seq != 1 {
		t.Fatalf("after %d records under one key: still the first key (%v), sequence number %d", maxRecordsPerKey, server.out.secret == first, server.out.seq)
	}
	got, updates, err := openAll(client, [][]byte{stream})
	if err != nil || string(got) != "last under the first keyunder the next key" || updates != 0 {
		t.Fatalf("the client read %q, %d update requests, %v", got, updates, err)
	}

	server.out.seq = ^uint64(0)
	if _, err := server.seal(nil, []byte("x"), recordTypeApplication); err == nil {
		t.Fatal("sealed a record with the last sequence number: the next would wrap to 0")
	}
}

// TestTLSRecordsPartialHoldsWhatArrived: between reads the record layer holds the part
// of a record that arrived, not room for the whole record its header announces: a
// client that sends a header for 16 KiB and one byte after it makes the server hold a
// few bytes, as a plain WebSocket holds only the part of a frame that arrived. The
// record is still read whole when the rest comes, in any number of reads.
func TestTLSRecordsPartialHoldsWhatArrived(t *testing.T) {
	client, server := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	rec, err := client.seal(nil, bytes.Repeat([]byte("z"), maxPlaintext), recordTypeApplication)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	deliver := func(p []byte) bool {
		got = append(got, p...)
		return true
	}
	noUpdate := func(bool) error { return nil }
	for _, cut := range [][]byte{rec[:6], rec[6:7], rec[7:100]} {
		if _, err := server.open(bytes.Clone(cut), deliver, noUpdate); err != nil {
			t.Fatal(err)
		}
		if held := cap(server.rin); held > 4*len(server.rin)+64 {
			t.Fatalf("%d bytes of a record arrived, %d held", len(server.rin), held)
		}
	}
	for _, cut := range chunk(rec[100:], 4000) {
		if _, err := server.open(bytes.Clone(cut), deliver, noUpdate); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != maxPlaintext || server.rin != nil {
		t.Fatalf("read %d of %d bytes, %d held after", len(got), maxPlaintext, len(server.rin))
	}
}
