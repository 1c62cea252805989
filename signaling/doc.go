// Package signaling owns relay's HTTP side: a signaling endpoint wire-compatible with the
// PeerJS server (its HTTP routes and its WebSocket protocol, see
// docs/peerjs-protocol.md), the ICE servers endpoint that hands browsers fresh
// time-limited TURN credentials, and the mounting of the embedded pages.
//
// WebSockets are relay's own (internal/wsconn: handshake, frames, pollers, outboxes,
// liveness): on Linux a socket, ws or wss (TLS 1.3), is read by one of a few epoll
// pollers, so an idle peer holds no goroutine and no buffer; a TLS 1.2 socket, or any
// socket elsewhere, by a goroutine of its own. This package keeps the PeerJS side: each
// peer is a wsconn.Handler (peer.go) that is told of messages and of the end of its
// connection, and that applies the message rate limit to every frame; the peers'
// outboxes share one wsconn.Budget, per source address and in total. origin.go decides
// which pages may use the endpoints.
//
// Peer ids and queued messages live behind the Registry interface, so that a shared
// backend can route between several nodes (package cluster, over Redis); the in-memory
// Registry serves one node and
// caps what it holds for absent ids in bytes, per destination, per source address and
// in total (registry.go).
//
// It must not speak STUN/TURN or know how credentials are made: it is given a function
// that mints them and one that lists the server's URIs.
package signaling
