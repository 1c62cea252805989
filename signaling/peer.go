package signaling

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// maxOutbox bounds what one slow client can hold: a peer this far behind is closed
	// rather than allowed to grow memory or block anyone else.
	maxOutbox    = 256
	writeTimeout = 10 * time.Second
)

// peerConn is one client WebSocket. Reads happen on the HTTP handler's goroutine;
// writes go through an outbox drained by a goroutine that exists only while there is
// something to write, so an idle peer costs no writer goroutine and a slow one never
// blocks the peer that sends to it.
type peerConn struct {
	s         *Server
	ws        *websocket.Conn
	id, token string

	mu      sync.Mutex
	outbox  [][]byte // a nil entry is a ping
	writing bool
	closed  bool
}

func (p *peerConn) Send(b []byte) bool { return p.enqueue(b, false) }

// ping queues a WebSocket ping; browsers answer with a pong, which counts as life.
func (p *peerConn) ping() { p.enqueue(nil, true) }

func (p *peerConn) enqueue(b []byte, ping bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if len(p.outbox) >= maxOutbox {
		return ping // a ping that does not fit is simply skipped
	}
	p.outbox = append(p.outbox, b)
	if !p.writing {
		p.writing = true
		go p.flush()
	}
	return true
}

func (p *peerConn) flush() {
	for {
		p.mu.Lock()
		if p.closed || len(p.outbox) == 0 {
			p.outbox = nil // release the backing array while idle
			p.writing = false
			p.mu.Unlock()
			return
		}
		b := p.outbox[0]
		p.outbox[0] = nil
		p.outbox = p.outbox[1:]
		p.mu.Unlock()

		_ = p.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		var err error
		if b == nil {
			err = p.ws.WriteMessage(websocket.PingMessage, nil)
		} else {
			err = p.ws.WriteMessage(websocket.TextMessage, b)
		}
		if err != nil {
			p.Close()
		}
	}
}

// Close ends the connection; the read loop then unregisters the peer.
func (p *peerConn) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.outbox = nil
	p.mu.Unlock()
	_ = p.ws.Close()
}

// closeWith sends a final message and a close frame, then closes: for handshake
// refusals, before any writer goroutine exists.
func closeWith(ws *websocket.Conn, msg []byte) {
	deadline := time.Now().Add(time.Second)
	_ = ws.SetWriteDeadline(deadline)
	if msg != nil {
		_ = ws.WriteMessage(websocket.TextMessage, msg)
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, ""), deadline)
	_ = ws.Close()
}
