package wsconn

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUpgradeRefusals: requests RFC 6455 4.2.1 does not allow are answered with an
// HTTP error, never 101.
func TestUpgradeRefusals(t *testing.T) {
	ts := startServer(t, testOptions{})
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	const rest = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	cases := []struct {
		name, req string
		status    int
	}{
		{"well-formed", "GET /?id=ok HTTP/1.1\r\n" + rest + key + "\r\n", http.StatusSwitchingProtocols},
		{"two Sec-WebSocket-Key headers", "GET /?id=a HTTP/1.1\r\n" + rest + key + "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n", http.StatusBadRequest},
		{"the same key twice", "GET /?id=b HTTP/1.1\r\n" + rest + key + key + "\r\n", http.StatusBadRequest},
		{"HTTP/1.0", "GET /?id=c HTTP/1.0\r\n" + rest + key + "\r\n", http.StatusBadRequest},
		{"no key", "GET /?id=d HTTP/1.1\r\n" + rest + "\r\n", http.StatusBadRequest},
		{"key of 15 bytes", "GET /?id=e HTTP/1.1\r\n" + rest + "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4P\r\n\r\n", http.StatusBadRequest},
		{"version 8", "GET /?id=f HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n" + key + "\r\n", http.StatusBadRequest},
		{"POST", "POST /?id=g HTTP/1.1\r\nContent-Length: 0\r\n" + rest + key + "\r\n", http.StatusMethodNotAllowed},
		{"no Upgrade", "GET /?id=h HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" + key + "\r\n", http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ts.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(tc.req)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != http.StatusSwitchingProtocols && !strings.Contains(resp.Header.Get("Sec-WebSocket-Version"), "13") {
				t.Errorf("refusal without Sec-WebSocket-Version: 13: %v", resp.Header)
			}
		})
	}
}
