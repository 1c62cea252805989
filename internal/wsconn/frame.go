package wsconn

import (
	"encoding/binary"
	"math/bits"
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
	ClosePolicyViolated = 1008
	CloseTooBig         = 1009
)

// maxControlPayload bounds ping, pong and close payloads (RFC 6455 5.5).
const maxControlPayload = 125

// frameReader reassembles a client's byte stream into messages and control frames. It
// holds bytes only while a frame or a fragmented message is incomplete, so an idle
// connection costs two nil slices.
type frameReader struct {
	partial []byte // the start of a frame whose remaining bytes have not arrived
	frag    []byte // payload of a fragmented message so far
	fragOp  byte   // opcode of that message; 0: none in progress
}

// feed parses data, which the reader may modify (payloads are unmasked in place). It
// calls emit for each complete message (OpText, OpBinary) and each control frame
// (OpPing, OpPong, OpClose), with a payload valid only during the call; emit returns
// false to stop reading (the connection is ending). feed returns 0, or the close code
// the connection must fail with: CloseProtocolError for frames RFC 6455 forbids,
// CloseTooBig for a message longer than maxMessage, known from a frame's header before
// its payload arrives.
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
		case op >= OpClose:
			if !emit(op, payload) {
				r.reset()
				return 0
			}
		case op == OpContinuation:
			r.frag = append(r.frag, payload...)
			if fin {
				msg, mop := r.frag, r.fragOp
				r.frag, r.fragOp = nil, 0
				if !emit(mop, msg) {
					r.reset()
					return 0
				}
			}
		case !fin:
			r.frag = append(r.frag[:0], payload...)
			r.fragOp = op
		default:
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
// where the payload begins. A header that is complete is checked even if its payload
// has not arrived, so an oversized message is refused without buffering it.
func (r *frameReader) header(b []byte, maxMessage int) (op byte, fin bool, start, end, code int) {
	if len(b) < 2 {
		return 0, false, 0, -1, 0
	}
	fin = b[0]&0x80 != 0
	op = b[0] & 0x0f
	n := uint64(b[1] & 0x7f)
	start = 2
	switch n {
	case 126:
		start = 4
	case 127:
		start = 10
	}
	masked := b[1]&0x80 != 0
	if masked {
		start += 4
	}
	if len(b) < start {
		return 0, false, 0, -1, 0
	}
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		n = binary.BigEndian.Uint64(b[2:])
	}
	switch {
	case b[0]&0x70 != 0: // RSV bits: no extension was negotiated
		return 0, false, 0, 0, CloseProtocolError
	case !masked: // a client must mask every frame
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

// closePayload is the payload of a close frame carrying code.
func closePayload(code int) []byte { return []byte{byte(code >> 8), byte(code)} }

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
