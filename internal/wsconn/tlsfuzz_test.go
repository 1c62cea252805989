package wsconn

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"
)

// FuzzTLSRecords: the record layer reads random record streams, cut into random reads,
// without panicking, without holding more than one record between reads, delivering
// only what the client sealed, in order, and all of it when every record is one the
// layer must accept. The input is a script for a client
// record layer (which has the keys, so that the engine reaches past authentication):
// each step seals application data, empty records, KeyUpdates, alerts, handshake
// messages or records of any inner type and padding, or appends raw bytes, or flips a
// bit of what is already written; the rest of the input cuts the stream into reads.
func FuzzTLSRecords(f *testing.F) {
	f.Add([]byte{0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 3, 1, 'x', 0, 0, 2, 1, 0, 1, 2, 'o', 'k', 0, 1, 2, 3})
	f.Add([]byte{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{1, 2, 0, 0, 1, 'a', 3, 1, 0, 3, 2, 40})
	f.Add([]byte{2, 4, 5, 24, 0, 0, 1, 1, 0, 0, 3, 'a', 'b', 'c', 7, 9})
	f.Add([]byte{0, 5, 23, 2, 3, 'a', 0, 0, 5, 0, 0, 0, 6, 4, 23, 3, 3, 0x40})
	f.Add([]byte{1, 6, 6, 23, 3, 3, 0x41, 0x01, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &script{in: in}
		suite := suites[int(s.byte())%len(suites)]
		secret := func(b byte) []byte {
			n := 32
			if suite == tls.TLS_AES_256_GCM_SHA384 {
				n = 48
			}
			return bytes.Repeat([]byte{b}, n)
		}
		client, err := newTLSRecords(suite, secret(2), secret(1), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		server, err := newTLSRecords(suite, secret(1), secret(2), 0, 0)
		if err != nil {
			t.Fatal(err)
		}

		var stream, sent []byte
		// valid: every step so far is one the record layer must accept (application
		// data, empty records and KeyUpdates, at most 16 in a row without data).
		valid, useless := true, 0
		steps := int(s.byte() % 32)
		for range steps {
			op := s.byte() % 8
			valid = valid && op <= 2
			switch op {
			case 0: // application data
				p := s.bytes()
				sent = append(sent, p...)
				stream, _ = client.seal(stream, p, recordTypeApplication)
				if useless++; len(p) > 0 {
					useless = 0
				}
			case 1: // an empty record
				stream, _ = client.seal(stream, nil, recordTypeApplication)
				useless++
			case 2: // a KeyUpdate, asking for ours or not
				stream, _ = client.sealKeyUpdate(stream, s.byte()&1 == 1)
				useless++
			case 3: // an alert
				stream, _ = client.seal(stream, []byte{s.byte(), s.byte()}, recordTypeAlert)
			case 4: // a handshake record with any content
				stream, _ = client.seal(stream, s.bytes(), recordTypeHandshake)
			case 5: // any inner type, any padding
				typ, pad := s.byte(), int(s.byte())
				inner := append(append(bytes.Clone(s.bytes()), typ), make([]byte, pad)...)
				// What it means: the last byte that is not zero is the type.
				if i := bytes.LastIndexFunc(inner, func(r rune) bool { return r != 0 }); i >= 0 && inner[i] == recordTypeApplication {
					sent = append(sent, inner[:i]...)
				}
				stream, _ = client.seal(stream, inner[:len(inner)-1], inner[len(inner)-1])
			case 6: // raw bytes
				stream = append(stream, s.bytes()...)
			case 7: // a flipped bit
				if len(stream) > 0 {
					i := int(s.byte())<<8 | int(s.byte())
					stream[i%len(stream)] ^= 1 << (s.byte() % 8)
				}
			}
			valid = valid && useless <= maxUselessRecords
		}

		var got []byte
		deliver := func(p []byte) bool {
			got = append(got, p...)
			return true
		}
		keyUpdate := func(requested bool) error {
			if requested {
				_, err := server.sealKeyUpdate(nil, false)
				return err
			}
			return nil
		}
		for len(stream) > 0 && err == nil {
			n := min(len(stream), 1+int(s.byte())<<6|int(s.byte()))
			_, err = server.open(stream[:n], deliver, keyUpdate)
			stream = stream[n:]
			if cap(server.rin) > recordHeaderLen+maxCiphertextTLS13 {
				t.Fatalf("holds %d bytes between reads, more than a record", cap(server.rin))
			}
		}
		var re *recordError
		if err != nil && !errors.Is(err, errCloseNotify) && !errors.As(err, &re) {
			t.Fatalf("error %v is neither an alert nor close_notify", err)
		}
		if !bytes.HasPrefix(sent, got) {
			t.Fatalf("delivered %q, which the client did not send (it sent %q)", got, sent)
		}
		if valid && (err != nil || !bytes.Equal(got, sent) || server.rin != nil) {
			t.Fatalf("a valid stream: delivered %q of %q, %d bytes held, error %v", got, sent, len(server.rin), err)
		}
	})
}

// script reads a fuzz input as a list of choices; past its end every choice is 0.
type script struct{ in []byte }

func (s *script) byte() byte {
	if len(s.in) == 0 {
		return 0
	}
	b := s.in[0]
	s.in = s.in[1:]
	return b
}

// bytes is a length byte and that many bytes (fewer at the end of the input).
func (s *script) bytes() []byte {
	n := min(int(s.byte()), len(s.in))
	b := s.in[:n]
	s.in = s.in[n:]
	return b
}
