package wsconn

import (
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"time"
)

// The WebSocket opening handshake (RFC 6455 section 4.2), answered on net/http's
// connection, which is then hijacked: no subprotocol, no extension.

const (
	websocketGUID    = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	handshakeTimeout = 10 * time.Second
)

// IsUpgrade reports whether r asks for a WebSocket.
func IsUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header lists token (in any case).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Upgrade answers the handshake and takes the connection from net/http. buffered is
// what the client sent after its request, already read by net/http: the start of its
// first frames, to be read before the socket. On failure the response is written and
// ok is false. The caller applies its own policy (origins, parameters) before.
func Upgrade(w http.ResponseWriter, r *http.Request) (conn net.Conn, buffered []byte, ok bool) {
	fail := func(status int) {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, http.StatusText(status), status)
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	switch {
	case !r.ProtoAtLeast(1, 1): // RFC 6455 4.2.1: "An HTTP/1.1 or higher GET request"
		fail(http.StatusBadRequest)
		return nil, nil, false
	case !IsUpgrade(r):
		fail(http.StatusBadRequest)
		return nil, nil, false
	case r.Method != http.MethodGet:
		fail(http.StatusMethodNotAllowed)
		return nil, nil, false
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		fail(http.StatusBadRequest)
		return nil, nil, false
	case len(r.Header.Values("Sec-WebSocket-Key")) != 1 || !validChallenge(key):
		// Two keys are two answers to choose from: the request is malformed.
		fail(http.StatusBadRequest)
		return nil, nil, false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		fail(http.StatusInternalServerError)
		return nil, nil, false
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		buffered = append([]byte(nil), b...)
	}
	// net/http's read and write timeouts end here: liveness is ours from now on.
	_ = conn.SetDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(key) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		_ = conn.Close()
		return nil, nil, false
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, buffered, true
}

// validChallenge: Sec-WebSocket-Key is 16 bytes in base64.
func validChallenge(key string) bool {
	b, err := base64.StdEncoding.DecodeString(key)
	return err == nil && len(b) == 16
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Refuse sends a final text message (if msg is not nil) and a close frame (policy
// violation), then closes: for refusals right after the handshake, before a Conn owns
// the socket.
func Refuse(conn net.Conn, msg []byte) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	var b []byte
	if msg != nil {
		b = appendFrame(b, OpText, msg)
	}
	b = appendFrame(b, OpClose, closePayload(ClosePolicyViolated))
	_, _ = conn.Write(b)
	_ = conn.Close()
}
