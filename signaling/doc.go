// Package signaling owns relay's HTTP side: a signaling endpoint wire-compatible with the
// PeerJS server (its HTTP routes and its WebSocket protocol, see
// docs/peerjs-protocol.md), the ICE servers endpoint that hands browsers fresh
// time-limited TURN credentials, and the mounting of the embedded pages.
//
// WebSockets are its own (upgrade.go, wsframe.go): on Linux a plain socket is read by one
// of a few epoll pollers (poller_linux.go), so an idle peer holds no goroutine and no
// buffer; a TLS socket, or any socket elsewhere, by a goroutine of its own (stream.go).
//
// Peer ids and queued messages live behind the Registry interface, so a shared backend
// can route between several nodes later; the in-memory Registry serves one node.
//
// It must not speak STUN/TURN or know how credentials are made: it is given a function
// that mints them and one that lists the server's URIs.
package signaling
