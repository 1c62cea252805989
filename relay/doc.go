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
// Where things are:
//   - the gate (gate.go: dispatch and credentials) has one file per TURN method it
//     checks: allocate.go, refresh.go, permission.go (CreatePermission) and
//     channelbind.go; nonces.go remembers pion's nonces, limits.go has the rate limits;
//   - client sockets: clientconn.go (UDP listeners, TCP/TLS connections and their
//     framing), sendbatch_linux.go and streamout.go (the way back to clients);
//   - the data path: fastpath.go (ChannelData both ways), relayconn.go and relaysock.go
//     (relay sockets, read by internal/rawudp's pollers, which hold every raw system
//     call), hotstate.go (what a packet reads of its allocation) and counters.go (what
//     it counts);
//   - control.go: operator control (package admin's hand on the server): allocations
//     listed and ended, revocations and byte budgets checked, refusals and allocations
//     reported;
//   - pioncontract.go: what relay relies on from pion/turn, with tests that fail if pion
//     changes it.
//
// It must not parse configuration files, mint credentials or serve HTTP: those belong to
// the config, auth and metrics packages, and to cmd/relay which assembles them.
package relay
