package wsconn

// readStream reads the socket on a goroutine of its own: for TLS 1.2 and TLS sockets
// not from NewTLSListener, which a poller cannot decrypt, and for systems without
// epoll. buffered is what net/http read past the handshake. Frames and messages are
// handled as on the poller path; writes go through the outbox and a writer goroutine
// that exists only while frames wait.
func (c *Conn) readStream(buffered []byte) {
	defer c.h.OnClose()
	defer c.Close()
	if len(buffered) > 0 && !c.consume(buffered) {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 && !c.consume(buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}
