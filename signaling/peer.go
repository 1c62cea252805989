package signaling

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/relayproject/relay/internal/wsconn"
)

// peer is one client of the PeerJS protocol: its id and token, the address it came
// from, and its WebSocket (internal/wsconn), which tells it of messages as a
// wsconn.Handler. It is what the Registry holds.
type peer struct {
	s         *Server
	id, token string
	ip        netip.Addr
	c         *wsconn.Conn

	// The message token bucket, touched only by whoever reads the socket.
	tokens float64
	last   int64
	// flood counts control frames refused since the bucket last had a token.
	flood int

	left atomic.Bool // it sent LEAVE: its bound credentials go at once (bind.go)
}

func newPeer(s *Server, conn net.Conn, id, token string, ip netip.Addr) *peer {
	p := &peer{s: s, id: id, token: token, ip: ip}
	p.c = wsconn.New(conn, p)
	p.c.Account(&s.outboxes, sourceKey(ip))
	p.tokens, p.last = 4*float64(s.conf().MessagesPerSecond), s.now()
	return p
}

// Send queues b as a text message; false if the peer is closed or too far behind.
func (p *peer) Send(b []byte) bool { return p.c.Send(b) }

// Close ends the connection; OnClose follows when the socket is closed.
func (p *peer) Close() { p.c.Close() }

// MaxMessage is [signal] max_message_bytes.
func (p *peer) MaxMessage() int { return p.s.conf().MaxMessageBytes }

// Admit is the message rate limit: a token bucket of frames per connection, so a
// call's candidates may come in a burst but a flood does not get through. Control
// frames (ping, pong, close) take tokens like messages: each ping costs the server a
// pong, and a flood of empty pings costs as much to read as one of messages. Excess
// frames are dropped and counted, not queued (a dropped ping is not answered). A
// client that goes on sending control frames with its budget spent, a whole burst of
// them, is flooding and is closed (1008): browsers only answer our pings, and send
// their own rarely if ever.
func (p *peer) Admit(control bool) bool {
	now, rate := p.s.now(), float64(p.s.conf().MessagesPerSecond)
	p.tokens = min(4*rate, p.tokens+float64(now-p.last)/float64(time.Second)*rate)
	p.last = now
	if p.tokens >= 1 {
		p.tokens--
		p.flood = 0
		return true
	}
	p.s.rejectedRate.Inc()
	if control {
		if p.flood++; float64(p.flood) > 4*rate {
			p.c.CloseWith(wsconn.ClosePolicyViolated)
		}
	}
	return false
}

// OnMessage handles a text message; binary messages mean nothing in PeerJS.
func (p *peer) OnMessage(op byte, payload []byte) {
	if op == wsconn.OpText {
		p.s.handle(p, payload)
	}
}

// OnFail counts oversized messages.
func (p *peer) OnFail(code int) {
	if code == wsconn.CloseTooBig {
		p.s.metrics.SignalRejected.WithLabelValues("message_too_large").Inc()
	}
}

// OnClose forgets the peer.
func (p *peer) OnClose() { p.s.release(p) }
