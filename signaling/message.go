package signaling

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"unicode/utf8"
)

// A client message is read for its type and dst only: the payload is checked to be
// JSON and forwarded as the client wrote it. The common shape (lowercase keys, plain
// strings) is scanned in one pass; anything else goes through encoding/json, so every
// message means what json.Unmarshal into inbound says it means.

// message is a parsed client message. payload aliases the input; nil when absent.
type message struct {
	typ, dst string
	payload  []byte
}

// parseMessage reads a client text message; ok is false for what the server ignores:
// invalid UTF-8 (it could not be forwarded in a text frame), invalid JSON, or type or
// dst that are not strings.
func parseMessage(data []byte) (m message, ok bool) {
	if !utf8.Valid(data) {
		return m, false
	}
	if m, known := scanMessage(data); known {
		return m, true
	}
	return decodeMessage(data)
}

// decodeMessage is the reference: encoding/json's reading of a message.
func decodeMessage(data []byte) (message, bool) {
	var in inbound
	if err := json.Unmarshal(data, &in); err != nil {
		return message{}, false
	}
	return message{typ: in.Type, dst: in.Dst, payload: in.Payload}, true
}

// maxScanDepth is how deep scanMessage follows nested payloads before leaving the
// message to encoding/json.
const maxScanDepth = 64

// scanMessage reads the common shape of a message in one pass. known is false when the
// message is anything else (invalid, unusual keys or strings, deep nesting); the caller
// then decodes it with encoding/json.
func scanMessage(b []byte) (m message, known bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return m, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return m, skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return m, false
		}
		ks := i + 1
		ke, plain := scanString(b, i)
		if ke < 0 || !plain {
			return m, false // escaped or non-ASCII keys may still fold to type, dst or payload
		}
		key := b[ks : ke-1]
		i = skipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return m, false
		}
		i = skipSpace(b, i+1)
		vs := i
		switch {
		case string(key) == "type" || string(key) == "dst":
			var s string
			switch {
			case i < len(b) && b[i] == '"':
				end, plain := scanString(b, i)
				if end < 0 || !plain {
					return m, false
				}
				s, i = internType(b[i+1:end-1]), end
			case bytes.HasPrefix(b[i:], []byte("null")):
				i += 4 // json.Unmarshal leaves the field as it was
				if string(key) == "type" {
					s = m.typ
				} else {
					s = m.dst
				}
			default:
				return m, false
			}
			if string(key) == "type" {
				m.typ = s
			} else {
				m.dst = string(s)
			}
		default:
			if foldsToField(key) {
				return m, false
			}
			if i = skipValue(b, i, 0); i < 0 {
				return m, false
			}
			if string(key) == "payload" {
				m.payload = b[vs:i]
			}
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return m, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return m, skipSpace(b, i+1) == len(b)
		default:
			return m, false
		}
	}
}

// internType returns the message types the server knows without allocating.
func internType(b []byte) string {
	switch string(b) {
	case typeOffer:
		return typeOffer
	case typeAnswer:
		return typeAnswer
	case typeCandidate:
		return typeCandidate
	case typeHeartbeat:
		return typeHeartbeat
	case typeLeave:
		return typeLeave
	case typeExpire:
		return typeExpire
	}
	return string(b)
}

// foldsToField reports whether key is one of the fields in another case, which
// encoding/json would match (it compares keys case-insensitively).
func foldsToField(key []byte) bool {
	if string(key) == "payload" {
		return false
	}
	return bytes.EqualFold(key, []byte("type")) || bytes.EqualFold(key, []byte("dst")) || bytes.EqualFold(key, []byte("payload"))
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString checks the JSON string starting at b[i] (a quote) and returns the index
// after its closing quote, or -1 if it is invalid. plain reports a string with no
// escapes and only ASCII, whose bytes are its value.
func scanString(b []byte, i int) (end int, plain bool) {
	plain = true
	for i++; i < len(b); i++ {
		// Eight bytes at a time past the ones that need no look: most of a payload.
		for i+8 <= len(b) && specialBytes(binary.LittleEndian.Uint64(b[i:])) == 0 {
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, plain
		case c < 0x20:
			return -1, false
		case c >= 0x80:
			plain = false
		case c == '\\':
			plain = false
			i++
			if i >= len(b) {
				return -1, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return -1, false
					}
				}
				i += 4
			default:
				return -1, false
			}
		}
	}
	return -1, false
}

const (
	lsbs = 0x0101010101010101
	msbs = 0x8080808080808080
)

// specialBytes is non-zero when one of the eight bytes in x ends or escapes a string or
// needs a closer look: '"', '\\', a control character, or a byte of a UTF-8 sequence.
func specialBytes(x uint64) uint64 {
	q := x ^ (lsbs * '"')
	e := x ^ (lsbs * '\\')
	return ((q-lsbs)&^q | (e-lsbs)&^e | (x-lsbs*0x20)&^x | x) & msbs
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipValue returns the index after the JSON value starting at b[i], or -1 when it is
// invalid or nested deeper than maxScanDepth.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := scanString(b, i)
		return end
	case c == '{' || c == '[':
		if depth >= maxScanDepth {
			return -1
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == closing {
			return i + 1
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return -1
				}
				if i, _ = scanString(b, i); i < 0 {
					return -1
				}
				if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
					return -1
				}
				i = skipSpace(b, i+1)
			}
			if i = skipValue(b, i, depth+1); i < 0 {
				return -1
			}
			if i = skipSpace(b, i); i >= len(b) {
				return -1
			}
			switch b[i] {
			case ',':
				i = skipSpace(b, i+1)
			case closing:
				return i + 1
			default:
				return -1
			}
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	default:
		return skipNumber(b, i)
	}
}

func skipLiteral(b []byte, i int, lit string) int {
	if bytes.HasPrefix(b[i:], []byte(lit)) {
		return i + len(lit)
	}
	return -1
}

// skipNumber follows the JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// appendOutbound appends {"type":T,"src":S,"dst":D,"payload":P}, leaving out an empty
// src or dst and an absent payload, as encoding/json writes outbound. payload must be
// valid JSON; it is copied as the client wrote it.
func appendOutbound(b []byte, typ, src, dst string, payload []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, typ)
	if src != "" {
		b = append(b, `,"src":`...)
		b = appendJSONString(b, src)
	}
	if dst != "" {
		b = append(b, `,"dst":`...)
		b = appendJSONString(b, dst)
	}
	if len(payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, payload...)
	}
	return append(b, '}')
}

// outboundSize is an upper bound of what appendOutbound appends for plain ASCII strings.
func outboundSize(typ, src, dst string, payload []byte) int {
	return len(`{"type":"","src":"","dst":"","payload":}`) + len(typ) + len(src) + len(dst) + len(payload)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json quotes strings (HTML-safe, invalid
// UTF-8 replaced).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
