package signaling

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/websocket"
)

// serveWebSocket runs the PeerJS handshake, in the reference server's order, then
// reads the peer's messages until its socket closes or falls silent.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		if !s.originAllowed(r.Header.Get("Origin")) {
			s.metrics.SignalRejected.WithLabelValues("origin").Inc()
		}
		return // Upgrade already answered
	}
	q := r.URL.Query()
	id, token, key := q.Get("id"), q.Get("token"), q.Get("key")
	refuse := func(reason, typ, msg string) {
		s.metrics.SignalRejected.WithLabelValues(reason).Inc()
		closeWith(ws, errorMessage(typ, msg))
	}
	switch {
	case id == "" || token == "" || key == "":
		refuse("missing_params", typeError, msgNoIDTokenKey)
		return
	case key != s.cfg.Key:
		refuse("invalid_key", typeError, msgInvalidKey)
		return
	case len(id) > maxIDBytes || len(token) > maxIDBytes:
		refuse("invalid_id", typeError, msgIDTooLong)
		return
	}

	p := &peerConn{s: s, ws: ws, id: id, token: token}
	ip := clientIP(r)
	replaced, err := s.reg.Register(id, token, p)
	switch {
	case errors.Is(err, ErrIDTaken):
		refuse("id_taken", typeIDTaken, msgIDTaken)
		return
	case errors.Is(err, ErrFull):
		refuse("full", typeError, msgFull)
		return
	case err != nil:
		refuse("full", typeError, err.Error())
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
			refuse("per_ip_limit", typeError, msgTooManyFrom)
		} else {
			closeWith(ws, nil)
		}
		return
	}
	if replaced != nil {
		replaced.Close() // same token: a reconnect takes over the id
	} else {
		s.metrics.SignalPeers.Inc()
	}
	p.Send(encode(outbound{Type: typeOpen}))
	for _, m := range s.reg.Drain(id) {
		p.Send(m.Data)
	}
	// Read on a fresh goroutine and let the HTTP handler return: its stack grew
	// through the HTTP and upgrade code, and an idle peer would keep it for hours.
	go func() {
		defer s.loops.Done()
		defer s.release(p, ip)
		s.read(p)
	}()
}

// read handles the peer's messages. Any frame, and the pong to our pings, proves life.
func (s *Server) read(p *peerConn) {
	ws := p.ws
	alive := s.conf().AliveTimeout
	ws.SetReadLimit(int64(s.conf().MaxMessageBytes))
	_ = ws.SetReadDeadline(time.Now().Add(alive))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(alive)) })
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(alive))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	// A token bucket of messages: a call's candidates come in a burst, a flood does not
	// stop. Excess messages are dropped, not queued.
	rate := float64(s.conf().MessagesPerSecond)
	tokens, last := 4*rate, time.Now()
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				s.metrics.SignalRejected.WithLabelValues("message_too_large").Inc()
			}
			return
		}
		now := time.Now()
		_ = ws.SetReadDeadline(now.Add(alive))
		tokens = min(4*rate, tokens+now.Sub(last).Seconds()*rate)
		last = now
		if tokens < 1 {
			s.metrics.SignalRejected.WithLabelValues("rate").Inc()
			continue
		}
		tokens--
		if typ == websocket.TextMessage {
			s.handle(p, data)
		}
	}
}

// handle applies the PeerJS relay rules to one message.
func (s *Server) handle(p *peerConn, data []byte) {
	var m inbound
	if err := json.Unmarshal(data, &m); err != nil {
		return // unparseable: ignored, the connection stays
	}
	s.metrics.SignalMessages.WithLabelValues(metricType(m.Type)).Inc()
	if !relayed(m.Type) {
		return // HEARTBEAT only proves life; unknown types are ignored
	}
	if m.Type == typeLeave && m.Dst == "" {
		if s.reg.Unregister(p.id, p) {
			s.metrics.SignalPeers.Dec()
		}
		p.Close()
		return
	}
	out := encode(outbound{Type: m.Type, Src: p.id, Dst: m.Dst, Payload: m.Payload})
	if m.Dst != "" {
		if dst := s.reg.Lookup(m.Dst); dst != nil {
			if dst.Send(out) {
				return
			}
			// The destination cannot keep up: drop it, as the reference server does when a
			// send fails, and tell the sender it left.
			s.metrics.SignalRejected.WithLabelValues("slow_consumer").Inc()
			dst.Close()
			p.Send(encode(outbound{Type: typeLeave, Src: m.Dst, Dst: p.id}))
			return
		}
	}
	if m.Dst == "" || m.Type == typeLeave || m.Type == typeExpire {
		return
	}
	if !s.reg.Enqueue(Queued{Src: p.id, Dst: m.Dst, Data: out, At: time.Now()}) {
		s.metrics.SignalRejected.WithLabelValues("queue_full").Inc()
	}
}

// release forgets a peer whose socket ended: its id is free at once.
func (s *Server) release(p *peerConn, ip netip.Addr) {
	p.Close()
	if s.reg.Unregister(p.id, p) {
		s.metrics.SignalPeers.Dec()
	}
	s.mu.Lock()
	delete(s.conns, p)
	if s.perIP[ip] <= 1 {
		delete(s.perIP, ip)
	} else {
		s.perIP[ip]--
	}
	s.mu.Unlock()
}
