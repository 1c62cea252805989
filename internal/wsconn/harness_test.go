package wsconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/internal/wstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer serves WebSockets with echoHandlers: every text message is sent back.
// It is the package's user in miniature, on a real socket on 127.0.0.1.
type testServer struct {
	t       testing.TB
	ln      net.Listener
	srv     *http.Server
	ps      *Pollers
	maxMsg  int
	admit   func(h *echoHandler, control bool) bool // nil: admit everything
	mu      sync.Mutex
	conns   map[string]*echoHandler
	running sync.WaitGroup // served connections not yet closed
	client  *tls.Config    // wss: a client configuration that trusts the server
}

type testOptions struct {
	tls     bool // serve wss (NewTLSListener)
	pollers int  // 0: the default; -1: none (goroutine path)
	admit   func(h *echoHandler, control bool) bool
	// handshakeTimeout is net/http's ReadHeaderTimeout, which bounds the TLS handshake
	// too; 0: 5 s.
	handshakeTimeout time.Duration
}

func startServer(t testing.TB, o testOptions) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, ln: ln, maxMsg: 1 << 20, admit: o.admit, conns: make(map[string]*echoHandler)}
	if o.tls {
		serverConf, client := testcert.Configs(t)
		ts.ln = NewTLSListener(ln, serverConf)
		ts.client = client
	}
	if o.pollers >= 0 {
		if ts.ps, err = StartPollers(o.pollers, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatal(err)
		}
	}
	if o.handshakeTimeout == 0 {
		o.handshakeTimeout = 5 * time.Second
	}
	ts.srv = &http.Server{Handler: http.HandlerFunc(ts.serve), ReadHeaderTimeout: o.handshakeTimeout}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ts.srv.Serve(ts.ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.srv.Shutdown(ctx)
		<-done
		ts.mu.Lock()
		for _, h := range ts.conns {
			h.c.Close()
		}
		ts.mu.Unlock()
		ts.ps.Stop()
		ts.running.Wait()
	})
	return ts
}

func (ts *testServer) serve(w http.ResponseWriter, r *http.Request) {
	nc, buffered, ok := Upgrade(w, r)
	if !ok {
		return
	}
	h := &echoHandler{ts: ts, id: r.URL.Query().Get("id"), closed: make(chan struct{})}
	h.c = New(nc, h)
	ts.mu.Lock()
	ts.conns[h.id] = h
	ts.running.Add(1)
	ts.mu.Unlock()
	h.c.Serve(ts.ps, buffered)
	h.c.Start([]byte("open"), nil)
}

// conn waits for the connection with id to be served.
func (ts *testServer) conn(id string) *echoHandler {
	ts.t.Helper()
	var h *echoHandler
	waitFor(ts.t, "connection "+id, func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		h = ts.conns[id]
		return h != nil
	})
	return h
}

type echoHandler struct {
	ts     *testServer
	id     string
	c      *Conn
	mu     sync.Mutex
	msgs   []string
	fails  []int
	closes atomic.Int32
	closed chan struct{}
}

func (h *echoHandler) MaxMessage() int { return h.ts.maxMsg }

func (h *echoHandler) Admit(control bool) bool {
	if h.ts.admit == nil {
		return true
	}
	return h.ts.admit(h, control)
}

func (h *echoHandler) OnMessage(op byte, p []byte) {
	h.mu.Lock()
	h.msgs = append(h.msgs, string(p))
	h.mu.Unlock()
	if op == OpText {
		h.c.Send(bytes.Clone(p))
	}
}

func (h *echoHandler) OnFail(code int) {
	h.mu.Lock()
	h.fails = append(h.fails, code)
	h.mu.Unlock()
}

func (h *echoHandler) OnClose() {
	if h.closes.Add(1) == 1 {
		close(h.closed)
		h.ts.running.Done()
	}
}

func (h *echoHandler) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

// rawClient speaks WebSocket frame by frame (wstest), to send what a well-behaved
// client library would not.
type rawClient struct{ *wstest.Client }

// rawDial connects as id and reads the greeting; extra is sent in the same write as the
// request (a pipelining client's first frames).
func (ts *testServer) rawDial(t testing.TB, id string, extra ...[]byte) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", ts.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if ts.client != nil {
		c = tls.Client(c, ts.client)
	}
	return ts.handshakeOver(t, c, id, extra...)
}

// handshakeOver runs the WebSocket handshake as id over c (already connected) and
// reads the greeting; extra goes in the same write as the request.
func (ts *testServer) handshakeOver(t testing.TB, c net.Conn, id string, extra ...[]byte) *rawClient {
	t.Helper()
	rc := &rawClient{wstest.Handshake(t, c, "/?id="+id, extra...)}
	rc.ExpectText("open")
	return rc
}

// expectEcho sends msg as one text frame and expects it back.
func (rc *rawClient) expectEcho(msg string) {
	rc.T.Helper()
	rc.Write(clientFrame(true, OpText, []byte(msg), true))
	rc.ExpectText(msg)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, cond)
}
