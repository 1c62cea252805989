package wsconn

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"hash"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// The TLS 1.3 record layer (RFC 8446 section 5) of a wss connection on a poller, after
// crypto/tls did the handshake and net/http read the upgrade request.
//
// Why not keep reading through tls.Conn: an idle tls.Conn holds about 6.5 KiB (its
// struct, two AES-GCM states, and the read and handshake buffers grown during the
// handshake, which it never gives back), which made 10-12 KiB of RSS per idle peer at
// 15,000 peers, against 1.3 KiB for plain ws. What a TLS 1.3 connection needs between
// records is its two traffic secrets and sequence numbers: tlsRecords keeps those
// (about 250 bytes) and makes the AEAD from them when a record comes or goes, keeping
// it only while the connection is busy (see Conn.Check).
//
// The handshake stays crypto/tls's, and so does every TLS 1.2 connection (read by a
// goroutine of its own, as before). The traffic secrets come from crypto/tls's key log
// (Config.KeyLogWriter), given to a writer per connection that keeps them in memory
// only, where tls.Conn keeps them too; tlssock.go counts the records crypto/tls wrote
// and read after the handshake, which are the sequence numbers to go on from.

const (
	recordHeaderLen    = 5
	maxPlaintext       = 16384       // RFC 8446 5.1
	maxCiphertextTLS13 = 16384 + 256 // RFC 8446 5.2
	aeadNonceLen       = 12
	// maxUselessRecords bounds consecutive records that carry no application data
	// (empty ones, KeyUpdates), as crypto/tls does.
	maxUselessRecords = 16
	// maxRecordsPerKey is how many records the record layer seals under one write key
	// before it moves to the next (a KeyUpdate of its own): RFC 8446 5.5 puts AES-GCM's
	// limit at 2^24.5 full-size records; ChaCha20-Poly1305 has none that matters, and
	// one rule serves both.
	maxRecordsPerKey = 1 << 24

	recordTypeAlert       = 21
	recordTypeHandshake   = 22
	recordTypeApplication = 23

	typeKeyUpdate = 24 // handshake message type

	alertCloseNotify       = 0
	alertNone              = 255 // a recordError that sends no alert back
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertIllegalParameter  = 47
)

// errNotTLS13 leaves a connection to tls.Conn: not TLS 1.3, an unknown suite, or the
// secrets or record counts are missing.
var errNotTLS13 = errors.New("wsconn: not a TLS 1.3 connection this record layer can take over")

// trafficKeys is one direction: its traffic secret (for KeyUpdate), the key and IV made
// from it, and the sequence number of the next record.
type trafficKeys struct {
	secret [48]byte // the first hashLen bytes
	key    [32]byte // the first keyLen bytes
	iv     [aeadNonceLen]byte
	seq    uint64
	nonce  [aeadNonceLen]byte // scratch: a nonce on the stack would escape to the AEAD
}

// tlsRecords is the record layer of one connection. in is the reader's (the poller
// goroutine's, or whoever holds the connection before it is on a poller); out is used
// under Conn.mu.
type tlsRecords struct {
	suite   uint16
	hashLen int
	keyLen  int
	in, out trafficKeys

	// The AEADs made from in.key and out.key, kept while the connection is busy. Check
	// drops them (stores nil) from another goroutine; only the owner of a direction
	// stores a non-nil one, made from its current key.
	inAEAD, outAEAD atomic.Pointer[aeadBox]
	uses            atomic.Uint32 // records opened or sealed since the last Check

	rin     []byte // an incomplete record from the client; nil when there is none
	useless int    // consecutive records without application data

	// updateDue (under Conn.mu, with out): the client asked for our KeyUpdate and it
	// is not sealed yet. It must precede our next application data (RFC 8446 4.6.3);
	// however many requests come meanwhile, one KeyUpdate answers them all.
	updateDue bool
}

type aeadBox struct{ cipher.AEAD }

// newTLSRecords takes over a TLS 1.3 connection with the given suite from the
// application traffic secrets it reads and writes under (on a server, the client's
// and its own); inSeq and outSeq are the records already read and written under them.
func newTLSRecords(suite uint16, inSecret, outSecret []byte, inSeq, outSeq uint64) (*tlsRecords, error) {
	r := &tlsRecords{suite: suite}
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		r.hashLen, r.keyLen = 32, 16
	case tls.TLS_AES_256_GCM_SHA384:
		r.hashLen, r.keyLen = 48, 32
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		r.hashLen, r.keyLen = 32, 32
	default:
		return nil, errNotTLS13
	}
	if len(inSecret) != r.hashLen || len(outSecret) != r.hashLen {
		return nil, errNotTLS13
	}
	if err := r.setKeys(&r.in, inSecret); err != nil {
		return nil, err
	}
	if err := r.setKeys(&r.out, outSecret); err != nil {
		return nil, err
	}
	r.in.seq, r.out.seq = inSeq, outSeq
	return r, nil
}

func (r *tlsRecords) hash() func() hash.Hash {
	if r.hashLen == 48 {
		return sha512.New384
	}
	return sha256.New
}

// expandLabel is HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context.
func (r *tlsRecords) expandLabel(secret []byte, label string, n int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // context
	return hkdf.Expand(r.hash(), secret, string(info), n)
}

// setKeys makes d's key and IV from secret (RFC 8446 section 7.3); the sequence
// number starts again at 0.
func (r *tlsRecords) setKeys(d *trafficKeys, secret []byte) error {
	key, err := r.expandLabel(secret, "key", r.keyLen)
	if err != nil {
		return err
	}
	iv, err := r.expandLabel(secret, "iv", aeadNonceLen)
	if err != nil {
		return err
	}
	copy(d.secret[:], secret)
	copy(d.key[:], key)
	copy(d.iv[:], iv)
	d.seq = 0
	clear(key)
	return nil
}

// update replaces d's secret with the next one (RFC 8446 section 7.2, KeyUpdate).
func (r *tlsRecords) update(d *trafficKeys) error {
	next, err := r.expandLabel(d.secret[:r.hashLen], "traffic upd", r.hashLen)
	if err != nil {
		return err
	}
	err = r.setKeys(d, next)
	clear(next)
	return err
}

func (r *tlsRecords) newAEAD(d *trafficKeys) (cipher.AEAD, error) {
	if r.suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		return chacha20poly1305.New(d.key[:r.keyLen])
	}
	b, err := aes.NewCipher(d.key[:r.keyLen])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// aead returns the direction's AEAD, made now if Check dropped it.
func (r *tlsRecords) aead(d *trafficKeys, p *atomic.Pointer[aeadBox]) (cipher.AEAD, error) {
	r.uses.Add(1)
	if b := p.Load(); b != nil {
		return b.AEAD, nil
	}
	a, err := r.newAEAD(d)
	if err != nil {
		return nil, err
	}
	p.Store(&aeadBox{a})
	return a, nil
}

// idle drops the AEADs unless the connection sealed or opened a few records since the
// last call: an idle peer keeps only its secrets, a busy one does not make an AEAD
// per record.
func (r *tlsRecords) idle() {
	if r.uses.Swap(0) < 4 {
		r.inAEAD.Store(nil)
		r.outAEAD.Store(nil)
	}
}

// forget wipes the secrets, keys and IVs of both directions and drops the AEADs: the
// connection has ended. Under Conn.mu, by the connection's reader.
func (r *tlsRecords) forget() {
	r.in, r.out = trafficKeys{}, trafficKeys{}
	r.inAEAD.Store(nil)
	r.outAEAD.Store(nil)
	r.rin = nil
}

// nextNonce is the nonce of the record with d's sequence number (RFC 8446 5.3), in
// d.nonce.
func (d *trafficKeys) nextNonce() []byte {
	d.nonce = d.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], d.seq)
	for i, b := range seq {
		d.nonce[aeadNonceLen-8+i] ^= b
	}
	return d.nonce[:]
}

// recordError is a fatal error in what the client sent, with the alert that says so
// (alertNone: none).
type recordError struct {
	alert byte
	msg   string
}

func (e *recordError) Error() string { return "tls: " + e.msg }

// errCloseNotify is the client's close_notify: the end of its stream, not a failure.
var errCloseNotify = errors.New("tls: close_notify")

// open reads the records in data (bytes from the socket, which open decrypts in place)
// and hands their application data to deliver, in order, until deliver returns false.
// An incomplete record at the end is kept (r.rin) and completed by the next call.
// keyUpdate is told of each KeyUpdate from the client, before the record layer moves
// to the client's next key; requested: the client asks for ours (RFC 8446 4.6.3), which
// keyUpdate must see sealed (sealKeyUpdate) before our next application data. The
// error is a *recordError, errCloseNotify, or nil; stop is whether deliver refused
// more.
func (r *tlsRecords) open(data []byte, deliver func([]byte) bool, keyUpdate func(requested bool) error) (stop bool, err error) {
	if len(r.rin) > 0 {
		need := recordHeaderLen
		if len(r.rin) >= recordHeaderLen {
			// Checked again: the start of a record may come from tls.Conn (takeOver),
			// which does not check a record's type until the record is whole.
			if err := checkHeader(r.rin); err != nil {
				return false, err
			}
			need += int(binary.BigEndian.Uint16(r.rin[3:]))
		}
		for len(r.rin) < need && len(data) > 0 {
			k := min(need-len(r.rin), len(data))
			r.rin = append(r.rin, data[:k]...)
			data = data[k:]
			if len(r.rin) == recordHeaderLen {
				if err := checkHeader(r.rin); err != nil {
					return false, err
				}
				need += int(binary.BigEndian.Uint16(r.rin[3:]))
			}
		}
		if len(r.rin) < need {
			return false, nil
		}
		rec := r.rin
		r.rin = nil // the record is opened in place, then let go: an idle peer keeps no buffer
		if stop, err := r.openRecord(rec, deliver, keyUpdate); stop || err != nil {
			return stop, err
		}
	}
	for len(data) > 0 {
		if len(data) < recordHeaderLen {
			r.rin = growTo(append(r.rin[:0], data...), recordHeaderLen)
			return false, nil
		}
		if err := checkHeader(data); err != nil {
			return false, err
		}
		n := recordHeaderLen + int(binary.BigEndian.Uint16(data[3:]))
		if len(data) < n {
			// What arrived, not room for what the header announces: a client that
			// sends a header and stops holds what it sent, as with a plain socket.
			r.rin = append([]byte(nil), data...)
			return false, nil
		}
		if stop, err := r.openRecord(data[:n], deliver, keyUpdate); stop || err != nil {
			return stop, err
		}
		data = data[n:]
	}
	return false, nil
}

// growTo returns b with room for n bytes.
func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	return append(make([]byte, 0, n), b...)
}

// checkHeader checks a record header: after the handshake every record is protected,
// so its outer type is application_data (RFC 8446 5.2); the version is 0x0303, which
// crypto/tls checks too.
func checkHeader(h []byte) error {
	switch {
	case h[0] != recordTypeApplication:
		return &recordError{alertUnexpectedMessage, "unprotected record after the handshake"}
	case h[1] != 3 || h[2] != 3:
		return &recordError{alertIllegalParameter, "record version is not 0x0303"}
	case int(binary.BigEndian.Uint16(h[3:])) > maxCiphertextTLS13:
		return &recordError{alertRecordOverflow, "record too long"}
	}
	return nil
}

// openRecord decrypts one whole record in place and acts on its content.
func (r *tlsRecords) openRecord(rec []byte, deliver func([]byte) bool, keyUpdate func(requested bool) error) (stop bool, err error) {
	a, err := r.aead(&r.in, &r.inAEAD)
	if err != nil {
		return false, &recordError{alertBadRecordMAC, err.Error()}
	}
	pt, err := a.Open(rec[recordHeaderLen:recordHeaderLen], r.in.nextNonce(), rec[recordHeaderLen:], rec[:recordHeaderLen])
	if err != nil {
		return false, &recordError{alertBadRecordMAC, "record authentication failed"}
	}
	r.in.seq++
	if r.in.seq == 0 {
		return false, &recordError{alertUnexpectedMessage, "sequence number wrapped"}
	}
	if len(pt) > maxPlaintext+1 {
		return false, &recordError{alertRecordOverflow, "plaintext too long"}
	}
	// The inner plaintext is content, content type, zero padding (RFC 8446 5.2).
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return false, &recordError{alertUnexpectedMessage, "record without a content type"}
	}
	typ, content := pt[i], pt[:i]
	switch typ {
	case recordTypeApplication:
		if len(content) == 0 {
			break // counted as useless below
		}
		r.useless = 0
		return !deliver(content), nil
	case recordTypeAlert:
		if len(content) == 2 && content[1] == alertCloseNotify {
			return false, errCloseNotify
		}
		// Any other alert ends the connection (RFC 8446 6: user_canceled too, as
		// crypto/tls treats it).
		return false, &recordError{alertNone, "alert from the client"}
	case recordTypeHandshake:
		if err := r.handshake(content, keyUpdate); err != nil {
			return false, err
		}
	default:
		return false, &recordError{alertUnexpectedMessage, "unexpected record type"}
	}
	if r.useless++; r.useless > maxUselessRecords {
		return false, &recordError{alertUnexpectedMessage, "too many records without application data"}
	}
	return false, nil
}

// handshake handles post-handshake messages from a client: KeyUpdate only (a client
// sends no NewSessionTicket, and no server message comes from a client). A message
// must lie within one record, as every client sends it; a KeyUpdate must end its
// record (RFC 8446 5.1: handshake messages must not span key changes).
func (r *tlsRecords) handshake(b []byte, keyUpdate func(requested bool) error) error {
	if len(b) == 0 {
		return &recordError{alertUnexpectedMessage, "empty handshake record"}
	}
	for len(b) > 0 {
		if len(b) < 4 {
			return &recordError{alertUnexpectedMessage, "handshake message split across records"}
		}
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if len(b) < 4+n {
			return &recordError{alertUnexpectedMessage, "handshake message split across records"}
		}
		if b[0] != typeKeyUpdate {
			return &recordError{alertUnexpectedMessage, "unexpected handshake message after the handshake"}
		}
		if n != 1 || b[4] > 1 {
			return &recordError{alertDecodeError, "malformed KeyUpdate"}
		}
		if len(b) > 4+n {
			return &recordError{alertUnexpectedMessage, "KeyUpdate not at the end of its record"}
		}
		if err := keyUpdate(b[4] == 1); err != nil {
			return err
		}
		if err := r.update(&r.in); err != nil {
			return &recordError{alertUnexpectedMessage, err.Error()}
		}
		r.inAEAD.Store(nil) // the old key's
		b = b[4+n:]
	}
	return nil
}

// seal appends plaintext to dst as records of content type typ, at most maxPlaintext
// bytes each. Under Conn.mu.
func (r *tlsRecords) seal(dst, plaintext []byte, typ byte) ([]byte, error) {
	a, err := r.aead(&r.out, &r.outAEAD)
	if err != nil {
		return dst, err
	}
	records := max(1, (len(plaintext)+maxPlaintext-1)/maxPlaintext)
	dst = growTo(dst, len(dst)+len(plaintext)+records*(recordHeaderLen+1+a.Overhead()))
	for first := true; first || len(plaintext) > 0; first = false {
		if r.out.seq == ^uint64(0) {
			// RFC 8446 5.3: a sequence number must not wrap. Unreachable while
			// sealApplication moves to the next key long before.
			return dst, errors.New("tls: write sequence number would wrap")
		}
		chunk := plaintext[:min(len(plaintext), maxPlaintext)]
		plaintext = plaintext[len(chunk):]
		n := len(chunk) + 1 + a.Overhead()
		start := len(dst)
		dst = growTo(dst, start+recordHeaderLen+n)
		dst = append(dst, recordTypeApplication, 3, 3, byte(n>>8), byte(n))
		body := len(dst)
		dst = append(dst, chunk...)
		dst = append(dst, typ)
		sealed := a.Seal(dst[body:body], r.out.nextNonce(), dst[body:], dst[start:body])
		dst = dst[:body+len(sealed)]
		r.out.seq++
	}
	return dst, nil
}

// sealedOut reports whether rec is one whole record sealed under the current write
// key with sequence number seq (not r.out.seq, which it leaves as it is).
func (r *tlsRecords) sealedOut(rec []byte, seq uint64) bool {
	if len(rec) < recordHeaderLen || len(rec) != recordHeaderLen+int(binary.BigEndian.Uint16(rec[3:])) {
		return false
	}
	a, err := r.newAEAD(&r.out)
	if err != nil {
		return false
	}
	next := r.out.seq
	r.out.seq = seq
	nonce := r.out.nextNonce()
	r.out.seq = next
	_, err = a.Open(nil, nonce, rec[recordHeaderLen:], rec[:recordHeaderLen])
	return err == nil
}

// sealApplication appends plaintext as application data records, after a KeyUpdate
// of ours when the client asked for one or the write key has sealed maxRecordsPerKey
// records. Under Conn.mu.
func (r *tlsRecords) sealApplication(dst, plaintext []byte) ([]byte, error) {
	if r.updateDue || r.out.seq+uint64(len(plaintext)/maxPlaintext+1) > maxRecordsPerKey {
		var err error
		if dst, err = r.sealKeyUpdate(dst, false); err != nil {
			return dst, err
		}
	}
	return r.seal(dst, plaintext, recordTypeApplication)
}

// sealKeyUpdate appends a KeyUpdate record under the current key, then moves to the
// next key. request asks the client to update its own (only tests do).
func (r *tlsRecords) sealKeyUpdate(dst []byte, request bool) ([]byte, error) {
	msg := []byte{typeKeyUpdate, 0, 0, 1, 0}
	if request {
		msg[4] = 1
	}
	dst, err := r.seal(dst, msg, recordTypeHandshake)
	if err != nil {
		return dst, err
	}
	if err := r.update(&r.out); err != nil {
		return dst, err
	}
	r.outAEAD.Store(nil)
	r.updateDue = false
	return dst, nil
}

// sealAlert appends an alert record (close_notify is a warning, the rest fatal).
func (r *tlsRecords) sealAlert(dst []byte, alert byte) ([]byte, error) {
	level := byte(2)
	if alert == alertCloseNotify {
		level = 1
	}
	return r.seal(dst, []byte{level, alert}, recordTypeAlert)
}
