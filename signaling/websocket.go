package signaling

import (
	"errors"
	"net/http"
	"time"

	"github.com/relayproject/relay/internal/wsconn"
)

// serveWebSocket runs the PeerJS handshake, in the reference server's order, then
// hands the socket to a poller (or to a goroutine of its own) and returns. ServeHTTP
// has checked the origin.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	conn, buffered, ok := wsconn.Upgrade(w, r)
	if !ok {
		return // upgrade already answered
	}
	q := r.URL.Query()
	id, token, key := q.Get("id"), q.Get("token"), q.Get("key")
	reject := func(reason, typ, msg string) {
		s.metrics.SignalRejected.WithLabelValues(reason).Inc()
		wsconn.Refuse(conn, errorMessage(typ, msg))
	}
	switch {
	case id == "" || token == "" || key == "":
		reject("missing_params", typeError, msgNoIDTokenKey)
		return
	case key != s.cfg.Key:
		reject("invalid_key", typeError, msgInvalidKey)
		return
	case len(id) > maxIDBytes || len(token) > maxIDBytes:
		reject("invalid_id", typeError, msgIDTooLong)
		return
	}

	ip := clientSource(r) // peers per source and the queues and outboxes count it
	p := newPeer(s, conn, id, token, ip)
	replaced, err := s.reg.Register(id, token, p)
	switch {
	case errors.Is(err, ErrIDTaken):
		reject("id_taken", typeIDTaken, msgIDTaken)
		return
	case errors.Is(err, ErrFull):
		reject("full", typeError, msgFull)
		return
	case err != nil:
		reject("full", typeError, err.Error())
		return
	}
	s.mu.Lock()
	overIP := replaced == nil && s.perIP[ip] >= s.conf().MaxPeersPerIP
	if !overIP && !s.closed {
		s.perIP[ip]++
		s.conns[p] = struct{}{}
		s.loops.Add(1) // under the lock that Close takes first: never after its Wait began
	}
	closed := s.closed
	s.mu.Unlock()
	if overIP || closed {
		s.reg.Unregister(id, p)
		if overIP {
			s.metrics.SignalRejected.WithLabelValues("per_ip_limit").Inc()
			wsconn.Refuse(conn, errorMessage(typeError, msgTooManyFrom))
		} else {
			wsconn.Refuse(conn, nil)
		}
		p.Close() // a message routed to it meanwhile stays unsent
		return
	}
	if replaced != nil {
		replaced.Close() // same token: a reconnect takes over the id
	} else {
		s.metrics.SignalPeers.Inc()
	}
	s.connected(id, token)
	// The socket goes to a poller (or its reader goroutine) first, so that OPEN and the
	// queued messages are written by the path that writes everything else.
	p.c.Serve(s.pollers, buffered)
	s.open(p)
}

// open sends OPEN, then the messages queued for the peer's id.
func (s *Server) open(p *peer) {
	var queued []Queued
	if !p.c.Closed() { // replaced already: the messages are the new socket's
		queued = s.reg.Drain(p.id)
	}
	msgs := make([][]byte, len(queued))
	for i, m := range queued {
		msgs[i] = m.Data
	}
	p.c.Start(openMessage, msgs)
}

var openMessage = encode(outbound{Type: typeOpen})

// handle applies the PeerJS relay rules to one message.
func (s *Server) handle(p *peer, data []byte) {
	m, ok := parseMessage(data)
	if !ok {
		return // unparseable: ignored, the connection stays
	}
	s.countMessage(m.typ)
	if !relayed(m.typ) {
		return // HEARTBEAT only proves life; unknown types are ignored
	}
	if m.typ == typeLeave && m.dst == "" {
		p.left.Store(true)
		if s.reg.Unregister(p.id, p) {
			s.metrics.SignalPeers.Dec()
		}
		p.Close()
		return
	}
	out := appendOutbound(make([]byte, 0, outboundSize(m.typ, p.id, m.dst, m.payload)), m.typ, p.id, m.dst, m.payload)
	if m.dst != "" {
		if dst := s.reg.Lookup(m.dst); dst != nil {
			sent := false
			if ss, ok := dst.(SourcedSender); ok {
				sent = ss.SendFrom(out, p.ip)
			} else {
				sent = dst.Send(out)
			}
			if sent {
				return
			}
			// The destination cannot keep up: drop it, as the reference server does when a
			// send fails, and tell the sender it left.
			s.metrics.SignalRejected.WithLabelValues("slow_consumer").Inc()
			dst.Close()
			p.Send(encode(outbound{Type: typeLeave, Src: m.dst, Dst: p.id}))
			return
		}
	}
	if m.dst == "" || m.typ == typeLeave || m.typ == typeExpire {
		return
	}
	if !s.reg.Enqueue(Queued{Src: p.id, Dst: m.dst, Data: out, At: time.Now(), From: p.ip}) {
		s.metrics.SignalRejected.WithLabelValues("queue_full").Inc()
	}
}

// release forgets a peer whose socket ended: its id is free at once.
func (s *Server) release(p *peer) {
	if s.reg.Unregister(p.id, p) {
		s.metrics.SignalPeers.Dec()
	}
	s.gone(p.id, p.token, p.left.Load())
	s.mu.Lock()
	delete(s.conns, p)
	if s.perIP[p.ip] <= 1 {
		delete(s.perIP, p.ip)
	} else {
		s.perIP[p.ip]--
	}
	s.mu.Unlock()
	s.loops.Done()
}
