// Package wstest is a WebSocket client for tests that speaks frame by frame: it sends
// what a well-behaved client library would not (unmasked frames, bad close codes,
// frames pipelined behind the upgrade request, one byte per write) and shows exactly
// which frames the server answers with. internal/wsconn's tests and signaling's drive
// their servers on 127.0.0.1 with it.
//
// It builds no frames itself (wsconn.AppendClientFrame does) and imports nothing of
// relay's, so that wsconn's own tests can use it.
package wstest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// EOF is the op Read returns when the server has closed the socket.
const EOF = 0xff

// Frame opcodes (RFC 6455 §5.2) the client checks for.
const (
	opText  = 0x1
	opClose = 0x8
)

// readTimeout bounds every read: a server that answers nothing fails the test rather
// than hanging it.
const readTimeout = 5 * time.Second

// Client is the client side of one WebSocket, after the handshake.
type Client struct {
	T    testing.TB
	Conn net.Conn      // the socket (a *tls.Conn for wss); closed when the test ends
	R    *bufio.Reader // reads Conn; it may hold frames that came with the 101
}

// Handshake sends an upgrade request for target (path and query, e.g. "/?id=a") over c,
// already connected, with extra in the same write (a pipelining client's first frames),
// and checks the server's 101. The key is RFC 6455's example, so the accept value is
// the RFC's too.
func Handshake(t testing.TB, c net.Conn, target string, extra ...[]byte) *Client {
	t.Helper()
	t.Cleanup(func() { _ = c.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), bytes.Join(extra, nil)...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &Client{T: t, Conn: c, R: br}
}

// Write sends frames in one write.
func (c *Client) Write(frames ...[]byte) {
	c.T.Helper()
	if _, err := c.Conn.Write(bytes.Join(frames, nil)); err != nil {
		c.T.Fatal(err)
	}
}

// Read returns the next server frame, which must be final and unmasked; op EOF when
// the server closed the socket (or reset it).
func (c *Client) Read() (op byte, payload []byte) {
	c.T.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(readTimeout))
	var h [2]byte
	if _, err := io.ReadFull(c.R, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
			return EOF, nil
		}
		c.T.Fatal(err)
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		c.T.Fatalf("server frame header %x: want FIN and no mask", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, _ = io.ReadFull(c.R, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, _ = io.ReadFull(c.R, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.R, payload); err != nil {
		c.T.Fatal(err)
	}
	return h[0] & 0x0f, payload
}

// ExpectText reads the next frame and fails the test unless it is the text message
// want.
func (c *Client) ExpectText(want string) {
	c.T.Helper()
	if op, p := c.Read(); op != opText || string(p) != want {
		c.T.Fatalf("frame op %d, %d bytes (%.40q); want the text %.40q (%d bytes)", op, len(p), p, want, len(want))
	}
}

// ExpectClose reads frames until a close frame, checks its code, then expects the end
// of the stream.
func (c *Client) ExpectClose(code int) {
	c.T.Helper()
	for {
		op, p := c.Read()
		if op == EOF {
			c.T.Fatalf("socket closed without a close frame (want %d)", code)
		}
		if op != opClose {
			continue
		}
		if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != code {
			c.T.Fatalf("close frame %x, want code %d", p, code)
		}
		break
	}
	if op, _ := c.Read(); op != EOF {
		c.T.Fatalf("frame %d after the close frame", op)
	}
}
