package signaling

// readStream reads a peer's socket on a goroutine of its own: for TLS, which an epoll
// reader cannot decrypt, and for systems without one. buffered is what net/http read
// past the handshake. Frames and messages are handled as on the poller path; writes go
// through the outbox and a writer goroutine that exists only while frames wait.
func (s *Server) readStream(p *peerConn, buffered []byte) {
	defer s.release(p)
	defer p.Close()
	if len(buffered) > 0 && !p.consume(buffered) {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := p.nc.Read(buf)
		if n > 0 && !p.consume(buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}
