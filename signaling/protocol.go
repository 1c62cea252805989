package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
)

// PeerJS message types.
const (
	typeOpen      = "OPEN"
	typeError     = "ERROR"
	typeIDTaken   = "ID-TAKEN"
	typeLeave     = "LEAVE"
	typeExpire    = "EXPIRE"
	typeOffer     = "OFFER"
	typeAnswer    = "ANSWER"
	typeCandidate = "CANDIDATE"
	typeHeartbeat = "HEARTBEAT"
)

// Handshake errors, worded as the PeerJS server words them (clients show them).
const (
	msgNoIDTokenKey = "No id, token, or key supplied to websocket server"
	msgInvalidKey   = "Invalid key provided"
	msgIDTaken      = "ID is taken"
	msgFull         = "Server has reached its concurrent user limit"
	msgTooManyFrom  = "Too many connections from your address"
	msgIDTooLong    = "ID or token is too long"
)

// maxIDBytes bounds ids and tokens: PeerJS ids are UUIDs or short names.
const maxIDBytes = 256

// inbound is what a client sends. Payload stays raw: the server never looks inside.
type inbound struct {
	Type    string          `json:"type"`
	Dst     string          `json:"dst"`
	Payload json.RawMessage `json:"payload"`
}

// outbound is what the server sends; src is always set by the server.
type outbound struct {
	Type    string          `json:"type"`
	Src     string          `json:"src,omitempty"`
	Dst     string          `json:"dst,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func encode(m outbound) []byte {
	return appendOutbound(nil, m.Type, m.Src, m.Dst, m.Payload)
}

func errorMessage(typ, msg string) []byte {
	payload, _ := json.Marshal(struct {
		Msg string `json:"msg"`
	}{msg})
	return encode(outbound{Type: typ, Payload: payload})
}

// relayed reports whether the server forwards messages of type t to their dst.
func relayed(t string) bool {
	switch t {
	case typeOffer, typeAnswer, typeCandidate, typeLeave, typeExpire:
		return true
	}
	return false
}

// metricType bounds the label set of relay_signal_messages_total.
func metricType(t string) string {
	if relayed(t) || t == typeHeartbeat {
		return t
	}
	return "other"
}

// newUUID returns a random (version 4) UUID, the form PeerJS ids take.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
