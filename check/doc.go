// Package check owns `relay check`: it checks a deployed STUN/TURN server from where it
// runs, the way a browser would use it, and says what is wrong when something is.
//
// For a turn:/turns: URL it sends a STUN Binding over the URL's transport (UDP, TCP or
// TLS), allocates a relay (with the 401/nonce dance), allocates a second relay on a second
// connection, gives each a permission for the other's relayed address, sends datagrams
// from one to the other and back through the server, and releases both (Refresh with
// LIFETIME 0). That proves relaying works without any external peer: it is exactly how
// two browsers that are both behind TURN reach each other. For an http(s) ICE endpoint
// URL it fetches the iceServers and checks every stun:, turn: and turns: URL listed, with
// the credentials handed out.
//
// Every step is timed and reported; a failure carries a diagnosis that names the STUN
// error code and reason verbatim (e.g. "401 Unauthorized") or the network condition (no
// answer, refused, TLS). It speaks STUN/TURN itself on top of pion/stun rather than
// through pion/turn's client, because that client hides what a check must report: the
// granted lifetime, the Binding error code, and the outcome of the final Refresh.
//
// It must not parse command lines (cmd/relay does) or touch server internals: it is a
// client, and only sees what any client sees.
package check
