package wsconn

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// WebSocket frames (RFC 6455 section 5) as this server reads and writes them: client
// frames are masked, server frames are not, no extension is negotiated.

// Opcodes.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Close codes the server sends.
const (
	CloseNormal         = 1000
	CloseProtocolError  = 1002
	CloseInvalidData    = 1007 // a text message or close reason that is not UTF-8
	ClosePolicyViolated = 1008
	CloseTooBig         = 1009
)

// validCloseCode reports whether a peer may send code in a close frame (RFC 6455
// 7.4.1 and the IANA registry): 1000-1003 and 1007-1014 are defined for the wire,
// 3000-4999 are for libraries and applications. 1004 is reserved; 1005, 1006 and 1015
// only ever stand for "no code", "no close frame" and "TLS failed" in an API; the
// rest below 3000 is unassigned, and 5000 and up is not a close code.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// maxControlPayload bounds ping, pong and close payloads (RFC 6455 5.5).
const maxControlPayload = 125

// frameReader reassembles a client's byte stream into messages and control frames. It
// holds bytes only while a frame or a fragmented message is incomplete, so an idle
// connection costs two nil slices.
type frameReader struct {
	partial []byte // the start of a frame whose remaining bytes have not arrived
	frag    []byte // payload of a fragmented message so far
	fragOK  int    // a fragmented text message: frag[:fragOK] is whole valid UTF-8
	fragOp  byte   // opcode of that message; 0: none in progress
}

// feed parses data, which the reader may modify (payloads are unmasked in place). It
// calls emit for each complete message (OpText, OpBinary) and each control frame
// (OpPing, OpPong, OpClose), with a payload valid only during the call; emit returns
// false to stop reading (the connection is ending). feed returns 0, or the close code
// the connection must fail with: CloseProtocolError for frames RFC 6455 forbids
// (including a close frame with a code no peer may send), CloseTooBig for a message
// longer than maxMessage, known from a frame's header before its payload arrives,
// CloseInvalidData for text (a message or a close reason) that is not UTF-8. A text
// message in fragments is checked as each fragment arrives, so it fails at the first
// fragment that cannot be the start of valid text; a code point may straddle two
// fragments.
func (r *frameReader) feed(data []byte, maxMessage int, emit func(op byte, payload []byte) bool) (closeCode int) {
	inPartial := len(r.partial) > 0
	if inPartial {
		r.partial = append(r.partial, data...)
		data = r.partial
	}
	off := 0
	for {
		op, fin, start, end, code := r.header(data[off:], maxMessage)
		if code != 0 {
			r.reset()
			return code
		}
		if end < 0 || end > len(data)-off {
			break // incomplete
		}
		payload := data[off+start : off+end]
		if data[off+1]&0x80 != 0 {
			unmask(payload, binary.LittleEndian.Uint32(data[off+start-4:]))
		}
		off += end
		switch {
		case op == OpClose:
			if code := checkClose(payload); code != 0 {
				r.reset()
				return code
			}
			if !emit(op, payload) {
				r.reset()
				return 0
			}
		case op >= OpClose:
			if !emit(op, payload) {
				r.reset()
				return 0
			}
		case op == OpContinuation:
			r.frag = append(r.frag, payload...)
			if r.fragOp == OpText {
				n, ok := validPrefix(r.frag[r.fragOK:])
				if r.fragOK += n; !ok || fin && r.fragOK != len(r.frag) {
					r.reset()
					return CloseInvalidData
				}
			}
			if fin {
				msg, mop := r.frag, r.fragOp
				r.frag, r.fragOp, r.fragOK = nil, 0, 0
				if !emit(mop, msg) {
					r.reset()
					return 0
				}
			}
		case !fin:
			r.frag = append(r.frag[:0], payload...)
			r.fragOp = op
			if op == OpText {
				n, ok := validPrefix(r.frag)
				if r.fragOK = n; !ok {
					r.reset()
					return CloseInvalidData
				}
			}
		default:
			if op == OpText && !utf8.Valid(payload) {
				r.reset()
				return CloseInvalidData
			}
			if !emit(op, payload) {
				r.reset()
				return 0
			}
		}
	}
	rest := data[off:]
	switch {
	case len(rest) == 0:
		r.partial = nil
	case inPartial && off == 0:
		// Nothing complete yet: r.partial is rest already. (Moving it onto itself on
		// every read would cost a frame's length per read: quadratic for a client
		// that trickles a large frame in small segments.)
	case inPartial && cap(r.partial) <= 4*len(rest)+4096:
		r.partial = r.partial[:copy(r.partial, rest)]
	default:
		r.partial = append([]byte(nil), rest...)
	}
	return 0
}

func (r *frameReader) reset() { *r = frameReader{} }

// header decodes and checks the frame header at the start of b. end is the frame's
// length (header and payload), or -1 when the header itself is incomplete; start is
// where the payload begins. Each part of the header is checked as soon as it has
// arrived (the first two bytes, then the extended length, then, with the masking key,
// the message size), so a bad frame fails without waiting for more, and an oversized
// message is refused without buffering it.
func (r *frameReader) header(b []byte, maxMessage int) (op byte, fin bool, start, end, code int) {
	if len(b) < 2 {
		return 0, false, 0, -1, 0
	}
	fin = b[0]&0x80 != 0
	op = b[0] & 0x0f
	n := uint64(b[1] & 0x7f)
	switch {
	case b[0]&0x70 != 0: // RSV bits: no extension was negotiated
		return 0, false, 0, 0, CloseProtocolError
	case b[1]&0x80 == 0: // a client must mask every frame
		return 0, false, 0, 0, CloseProtocolError
	case op >= OpClose:
		if op > OpPong || !fin || n > maxControlPayload {
			return 0, false, 0, 0, CloseProtocolError
		}
	case op == OpContinuation:
		if r.fragOp == 0 {
			return 0, false, 0, 0, CloseProtocolError
		}
	case op == OpText || op == OpBinary:
		if r.fragOp != 0 {
			return 0, false, 0, 0, CloseProtocolError
		}
	default: // reserved data opcodes
		return 0, false, 0, 0, CloseProtocolError
	}
	start = 2
	switch n {
	case 126:
		if start = 4; len(b) < start {
			return 0, false, 0, -1, 0
		}
		// The shortest encoding is the only valid one (RFC 6455 5.2).
		if n = uint64(binary.BigEndian.Uint16(b[2:])); n < 126 {
			return 0, false, 0, 0, CloseProtocolError
		}
	case 127:
		if start = 10; len(b) < start {
			return 0, false, 0, -1, 0
		}
		// The most significant bit must be 0, and a length that fits 16 bits must use them.
		if n = binary.BigEndian.Uint64(b[2:]); n>>63 != 0 || n <= 0xffff {
			return 0, false, 0, 0, CloseProtocolError
		}
	}
	if start += 4; len(b) < start { // the masking key
		return 0, false, 0, -1, 0
	}
	if op < OpClose && (n > uint64(maxMessage) || n+uint64(len(r.frag)) > uint64(maxMessage)) {
		return 0, false, 0, 0, CloseTooBig
	}
	return op, fin, start, start + int(n), 0
}

// unmask XORs b with the 4-byte masking key (read little-endian from the wire), eight
// bytes at a time.
func unmask(b []byte, key uint32) {
	k64 := uint64(key) | uint64(key)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= byte(key)
		key = bits.RotateLeft32(key, -8)
	}
}

// appendFrame appends an unmasked server frame of one opcode with payload p.
func appendFrame(dst []byte, op byte, p []byte) []byte {
	n := len(p)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|op, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, p...)
}

// closePayload is the payload of a close frame carrying code. A code that must not be
// on the wire (1005, 1006, 1015, anything invalid) is sent as no code at all.
func closePayload(code int) []byte {
	if !validCloseCode(code) {
		return nil
	}
	return []byte{byte(code >> 8), byte(code)}
}

// checkClose checks a close frame's payload (RFC 6455 5.5.1, 7.4): empty, or a valid
// code and a UTF-8 reason. It returns the code to fail the connection with, or 0.
func checkClose(p []byte) int {
	switch {
	case len(p) == 0:
		return 0
	case len(p) == 1 || !validCloseCode(int(binary.BigEndian.Uint16(p))):
		return CloseProtocolError
	case !utf8.Valid(p[2:]):
		return CloseInvalidData
	}
	return 0
}

// validPrefix checks text that may continue in a later fragment: n is the length of
// the whole code points at its start, ok is false if b cannot begin valid UTF-8 (an
// invalid sequence before its end, or an end that no continuation can complete).
func validPrefix(b []byte) (n int, ok bool) {
	for n < len(b) {
		if b[n] < utf8.RuneSelf {
			n++
			continue
		}
		r, size := utf8.DecodeRune(b[n:])
		if r == utf8.RuneError && size == 1 {
			// FullRune is false only for the valid start of a sequence cut short.
			return n, !utf8.FullRune(b[n:])
		}
		n += size
	}
	return n, true
}

// AppendClientFrame appends a frame as a client sends it: masked (with a fixed key)
// unless told otherwise. For tests and load generators, which must also send what a
// well-behaved client library would not.
func AppendClientFrame(dst []byte, fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		dst = append(dst, b0, mbit|byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, mbit|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, mbit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !masked {
		return append(dst, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	dst = append(dst, key[:]...)
	for i, c := range payload {
		dst = append(dst, c^key[i%4])
	}
	return dst
}
