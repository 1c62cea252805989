//go:build !linux

package wsconn

import "log/slog"

// Without epoll every socket is read by a goroutine of its own (stream.go).

type poller struct{}

// Pollers is empty here.
type Pollers struct{}

// StartPollers starts nothing: there is no epoll.
func StartPollers(int, *slog.Logger) (*Pollers, error) { return &Pollers{}, nil }

// Len is 0.
func (ps *Pollers) Len() int { return 0 }

// Stop does nothing.
func (ps *Pollers) Stop() {}

func (ps *Pollers) take(*Conn, []byte) bool { return false }

func (c *Conn) writeFrameLocked(byte, []byte) {}
func (c *Conn) flushLocked()                  {}
func (c *Conn) alertLocked(byte)              {}
func shutdownFd(int)                          {}
