// Package relay owns relay's STUN/TURN server and its data path.
//
// pion/turn keeps the TURN control plane (allocations, permissions, channels and their
// lifetimes); this package assembles it and stands in front of it. It opens every socket
// itself (SO_REUSEPORT UDP listeners, TCP and TLS listeners, relay sockets in the
// configured port range) and wraps them, so that
//   - STUN Binding requests are answered here, without allocating;
//   - credentials, the peer policy and quotas are checked before pion sees a request,
//     and refusals get the RFC 8656 error code with the right attributes;
//   - every datagram to a peer passes the peer policy and is counted as it goes.
//
// The gate (gate.go: dispatch and credentials) has one file per TURN method it checks:
// allocate.go, refresh.go, permission.go (CreatePermission) and channelbind.go.
//
// It must not parse configuration files, mint credentials or serve HTTP: those belong to
// the config, auth and metrics packages, and to cmd/relay which assembles them.
package relay
