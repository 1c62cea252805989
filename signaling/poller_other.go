//go:build !linux

package signaling

// Without epoll every socket is read by a goroutine of its own (stream.go).

type poller struct{}

func (s *Server) startPollers() error { return nil }
func (s *Server) stopPollers()        {}
func (s *Server) pickPoller() *poller { return nil }

func (p *peerConn) toPoller(*poller) bool         { return false }
func (p *peerConn) writeFrameLocked(byte, []byte) {}
func (p *peerConn) flushLocked()                  {}
func shutdownFd(int)                              {}
