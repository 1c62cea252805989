package relay

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // STUN MESSAGE-INTEGRITY is HMAC-SHA1 (RFC 8489)
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"time"
)

// Wire constants from RFC 8489 / RFC 8656 that the hot path needs without decoding a
// whole message.
const (
	stunHeaderSize  = 20
	magicCookie     = 0x2112A442
	fingerprintXOR  = 0x5354554e
	attrMappedAddr  = 0x0001
	attrXORMapped   = 0x0020
	attrSoftware    = 0x8022
	attrFingerprint = 0x8028
	attrData        = 0x0013

	typeBindingRequest   = 0x0001
	typeAllocateError    = 0x0113
	typeAllocateSuccess  = 0x0103
	typeRefreshSuccess   = 0x0104
	attrErrorCode        = 0x0009
	attrLifetime         = 0x000D
	attrMessageIntegrity = 0x0008
	typeBindingSuccess   = 0x0101
	typeDataIndication   = 0x0017
	channelDataHdrSize   = 4
	maxStreamFrameBytes  = 4096 // larger frames on TCP/TLS are abuse: nothing legitimate exceeds the MTU
)

var errBadFrame = errors.New("relay: not a STUN message or ChannelData frame")

// isChannelData reports whether b starts like a ChannelData message (first two bits 01).
func isChannelData(b []byte) bool { return len(b) >= channelDataHdrSize && b[0]&0xC0 == 0x40 }

// isSTUN reports whether b has a STUN header: first two bits 00, the magic cookie and a
// length that is a multiple of 4 and matches the datagram.
func isSTUN(b []byte) bool {
	return len(b) >= stunHeaderSize && b[0]&0xC0 == 0 &&
		binary.BigEndian.Uint32(b[4:8]) == magicCookie &&
		int(binary.BigEndian.Uint16(b[2:4]))+stunHeaderSize == len(b) && len(b)%4 == 0
}

// streamFrameSize returns the size of the first TURN frame in b as it travels over a
// stream transport (ChannelData padded to 4 bytes), 0 if more bytes are needed, or an
// error if b cannot start a frame.
func streamFrameSize(b []byte) (int, error) {
	if len(b) < channelDataHdrSize {
		return 0, nil
	}
	switch {
	case b[0]&0xC0 == 0x40:
		n := int(binary.BigEndian.Uint16(b[2:4]))
		return channelDataHdrSize + (n+3)&^3, nil
	case b[0]&0xC0 == 0:
		if len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) != magicCookie {
			return 0, errBadFrame
		}
		return stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4])), nil
	default:
		return 0, errBadFrame
	}
}

// relayedPayload returns the payload size of a ChannelData message or a Data indication
// that pion sends to a client, and false for anything else (responses, errors).
func relayedPayload(b []byte) (int, bool) {
	if isChannelData(b) {
		return int(binary.BigEndian.Uint16(b[2:4])), true
	}
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b[0:2]) != typeDataIndication {
		return 0, false
	}
	for off := stunHeaderSize; off+4 <= len(b); {
		t := binary.BigEndian.Uint16(b[off : off+2])
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if t == attrData {
			return l, off+4+l <= len(b)
		}
		off += 4 + (l+3)&^3
	}
	return 0, false
}

// responseMethods are the methods counted in relay_turn_requests_total, with their STUN
// method numbers; responseClasses the result classes.
var (
	responseMethods = [...]struct {
		code uint16
		name string
	}{{0x001, "binding"}, {0x003, "allocate"}, {0x004, "refresh"}, {0x008, "create_permission"}, {0x009, "channel_bind"}}
	responseClasses = [...]string{"2xx", "3xx", "4xx", "5xx"}
)

// responseClass classifies a STUN response: the index of its method in responseMethods
// and of its class in responseClasses (errors by their ERROR-CODE class).
func responseClass(b []byte) (method, class int, ok bool) {
	if len(b) < stunHeaderSize || b[0]&0xC0 != 0 {
		return 0, 0, false
	}
	t := binary.BigEndian.Uint16(b[0:2])
	// The class bits are 0x0100 (C1) and 0x0010 (C0); the method is the rest.
	c1, c0 := t&0x0100 != 0, t&0x0010 != 0
	if !c1 {
		return 0, 0, false // a request or an indication
	}
	m := t &^ 0x0110
	m = (m & 0x000F) | ((m & 0x00E0) >> 1) | ((m & 0x3E00) >> 2)
	method = -1
	for i, rm := range responseMethods {
		if rm.code == m {
			method = i
		}
	}
	if method < 0 {
		return 0, 0, false
	}
	if !c0 {
		return method, 0, true // success response
	}
	for off := stunHeaderSize; off+4 <= len(b); {
		at := binary.BigEndian.Uint16(b[off : off+2])
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if at == attrErrorCode && l >= 4 && off+8 <= len(b) {
			switch b[off+6] & 0x7 {
			case 3:
				return method, 1, true
			case 4:
				return method, 2, true
			case 5, 6:
				return method, 3, true
			}
			return 0, 0, false
		}
		off += 4 + (l+3)&^3
	}
	return 0, 0, false
}

// allocateErrorCode returns the ERROR-CODE of an Allocate error response, if b is one.
func allocateErrorCode(b []byte) (int, bool) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b[0:2]) != typeAllocateError {
		return 0, false
	}
	if v, ok := attrValue(b, attrErrorCode); ok && len(v) >= 4 {
		return int(v[2]&0x7)*100 + int(v[3]), true
	}
	return 0, false
}

// responseLifetime returns the LIFETIME of a success response to Allocate or Refresh, if
// b is one: what pion granted the allocation.
func responseLifetime(b []byte) (uint32, bool) {
	if len(b) < stunHeaderSize {
		return 0, false
	}
	if t := binary.BigEndian.Uint16(b[0:2]); t != typeAllocateSuccess && t != typeRefreshSuccess {
		return 0, false
	}
	if v, ok := attrValue(b, attrLifetime); ok && len(v) == 4 {
		return binary.BigEndian.Uint32(v), true
	}
	return 0, false
}

// attrValue returns the value of the first attribute of type at in the STUN message b,
// if it lies within b.
func attrValue(b []byte, at uint16) ([]byte, bool) {
	for off := stunHeaderSize; off+4 <= len(b); {
		t := binary.BigEndian.Uint16(b[off : off+2])
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if t == at {
			if off+4+l > len(b) {
				return nil, false
			}
			return b[off+4 : off+4+l], true
		}
		off += 4 + (l+3)&^3
	}
	return nil, false
}

// appendBindingSuccess appends a Binding success response for the request with the given
// transaction ID (12 bytes) to dst: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS for RFC 3489
// clients, SOFTWARE when configured, and FINGERPRINT. It never allocates when dst has room.
func appendBindingSuccess(dst []byte, txid []byte, from netip.AddrPort, software string) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, typeBindingSuccess)
	dst = append(dst, 0, 0) // length, written below
	dst = binary.BigEndian.AppendUint32(dst, magicCookie)
	dst = append(dst, txid[:12]...)

	ip := from.Addr().Unmap()
	family, ipLen := byte(1), 4
	if ip.Is6() {
		family, ipLen = 2, 16
	}
	raw := ip.As16()
	ipBytes := raw[16-ipLen:]

	// XOR-MAPPED-ADDRESS: port XOR the cookie's top half, address XOR cookie||txid.
	dst = binary.BigEndian.AppendUint16(dst, attrXORMapped)
	dst = binary.BigEndian.AppendUint16(dst, uint16(4+ipLen))
	dst = append(dst, 0, family)
	dst = binary.BigEndian.AppendUint16(dst, from.Port()^(magicCookie>>16))
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[:4], magicCookie)
	copy(mask[4:], txid[:12])
	for i := 0; i < ipLen; i++ {
		dst = append(dst, ipBytes[i]^mask[i])
	}

	dst = binary.BigEndian.AppendUint16(dst, attrMappedAddr)
	dst = binary.BigEndian.AppendUint16(dst, uint16(4+ipLen))
	dst = append(dst, 0, family)
	dst = binary.BigEndian.AppendUint16(dst, from.Port())
	dst = append(dst, ipBytes...)

	if software != "" {
		dst = binary.BigEndian.AppendUint16(dst, attrSoftware)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(software)))
		dst = append(dst, software...)
		for (len(dst)-start)%4 != 0 {
			dst = append(dst, 0)
		}
	}

	// FINGERPRINT covers the message with the length already counting the fingerprint.
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start-stunHeaderSize+8))
	crc := crc32.ChecksumIEEE(dst[start:]) ^ fingerprintXOR
	dst = binary.BigEndian.AppendUint16(dst, attrFingerprint)
	dst = binary.BigEndian.AppendUint16(dst, 4)
	dst = binary.BigEndian.AppendUint32(dst, crc)
	return dst
}

// decodeXORAddress decodes an XOR-PEER-ADDRESS (or XOR-MAPPED-ADDRESS) value.
func decodeXORAddress(v []byte, txid [12]byte) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ (magicCookie >> 16)
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[:4], magicCookie)
	copy(mask[4:], txid[:])
	switch v[1] {
	case 1:
		if len(v) != 8 {
			return netip.AddrPort{}, false
		}
		var a [4]byte
		for i := range a {
			a[i] = v[4+i] ^ mask[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case 2:
		if len(v) != 20 {
			return netip.AddrPort{}, false
		}
		var a [16]byte
		for i := range a {
			a[i] = v[4+i] ^ mask[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a), port), true
	}
	return netip.AddrPort{}, false
}

// lifetimeSeconds is the LIFETIME relay grants at most for limit. pion treats an hour
// or more as "use the default" (10 minutes, pioncontract.go), so the grant stays a
// second under an hour.
func lifetimeSeconds(limit time.Duration) uint32 {
	return uint32(min(limit, pionMaxLifetime-time.Second) / time.Second)
}

// clampLifetime rewrites the LIFETIME of the request in b to secs and signs it again
// with key (MESSAGE-INTEGRITY, then FINGERPRINT if present), so that pion, which checks
// the signature, grants the capped lifetime.
func clampLifetime(b []byte, secs uint32, key []byte) {
	for off := stunHeaderSize; off+4 <= len(b); {
		t := binary.BigEndian.Uint16(b[off : off+2])
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		end := off + 4 + (l+3)&^3
		if off+4+l > len(b) {
			return
		}
		switch t {
		case attrLifetime:
			if l == 4 {
				binary.BigEndian.PutUint32(b[off+4:], secs)
			}
		case attrMessageIntegrity:
			if l != 20 {
				return
			}
			// The HMAC covers the message up to this attribute, with the header's length
			// counting up to its end.
			total := binary.BigEndian.Uint16(b[2:4])
			binary.BigEndian.PutUint16(b[2:4], uint16(end-stunHeaderSize))
			mac := hmac.New(sha1.New, key)
			mac.Write(b[:off])
			copy(b[off+4:off+4+20], mac.Sum(nil))
			binary.BigEndian.PutUint16(b[2:4], total)
		case attrFingerprint:
			if l != 4 {
				return
			}
			crc := crc32.ChecksumIEEE(b[:off]) ^ fingerprintXOR
			binary.BigEndian.PutUint32(b[off+4:], crc)
			return
		}
		off = end
	}
}
