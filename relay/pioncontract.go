package relay

import "time"

// What relay relies on from pion/turn v4.
//
// relay hands pion sockets of its own making and sees most traffic before pion does
// (doc.go), so its code depends on how pion uses those sockets and when it calls back.
// These are the assumptions, where relay depends on each, and the test in
// pioncontract_test.go that fails if a pion release changes it. Read this before
// upgrading pion/turn; the tests drive pion's real server with scripted sockets.
//
//  1. One synchronous read loop per client socket (TestPionContractSynchronousReadLoop).
//     pion reads each UDP listener, and each TCP/TLS connection, from one goroutine,
//     and handles a datagram completely (AuthHandler, the allocation table, its events,
//     the response written with WriteTo) before it reads the next. Relied on by: the
//     gate, one per read loop and unlocked (gate.go); the quota reservation settled on
//     the next read, when pion has answered the Allocate (allocations.settle); the
//     AuthHandler, which returns the key the gate verified this very request with
//     (keyCache.get); the gate's answers, sent before pion sees the next request
//     (packetConn.flushReplies).
//
//  2. pionReadBufSize-byte read buffers (TestPionContractReadBuffers). pion reads client
//     sockets into a buffer of pionReadBufSize bytes and drops a datagram that fills it
//     (it may have been cut); it reads relay sockets into one of the same size. Relied
//     on by: packetConn.ReadFrom, which copies what the gate passes into pion's buffer
//     (udpReadBufSize); relayConn.ReadFrom, which copies a queued datagram of up to
//     relayBufSize-channelDataHdrSize-3 bytes into it.
//
//  3. A read error ends the loop for good (TestPionContractReadErrorEndsLoop). Any error
//     from a listener's ReadFrom or Accept ends pion's loop on it, and its allocations
//     close. packetConn.ReadFrom and streamListener.Accept therefore never return
//     anything but net.ErrClosed, and retry whatever else fails.
//
//  4. Events come before the answer (TestPionContractEventsBeforeResponses).
//     OnAllocationCreated, OnPermissionCreated and OnChannelCreated run before the
//     success response is written: a client that hears "success" may send ChannelData
//     at once, and the fast path must already know the channel (hotState). pion calls
//     AllocatePacketConn before OnAllocationCreated, whose relay address is the one
//     AllocatePacketConn returned: the event finds the relayConn by its port
//     (relayPorts.lookup).
//
//  5. The relay socket's lifetime (TestPionContractRelaySocketLifetime). pion reads
//     each relay socket from a goroutine of its own until ReadFrom fails; it sets no
//     deadline on it (relayConn's are no-ops, and its ReadFrom sleeps until a datagram
//     is queued or the socket closes); it sends to peers with WriteTo and a *net.UDPAddr
//     (relayConn.WriteTo); and however an allocation ends (Refresh with LIFETIME 0,
//     expiry, its connection's end, the listener's end), it closes the relay socket and
//     reports OnAllocationDeleted. relayConn.Close frees the port; Server.Close waits
//     for every relay socket to close.
//
//  6. Stream allocations are keyed by the connection (TestPionContractStreamConnection).
//     For a TCP/TLS client pion's events carry the connection's RemoteAddr (a
//     *net.TCPAddr, which keyOf uses to tell stream allocations from UDP ones) and
//     LocalAddr; it reads the connection with Read, one TURN frame per Read is enough
//     (streamConn hands it exactly one), writes with Write (streamConn.Write counts
//     responses), and when Read fails it deletes the connection's allocation and
//     closes the connection (streamConn.Read marks why first; a stuck stream outbox
//     closes the connection to end the allocation).
//
//  7. LIFETIME and MESSAGE-INTEGRITY (TestPionContractLifetime). pion grants a LIFETIME
//     under pionMaxLifetime as asked, and pionDefaultLifetime for anything at or above
//     it; so relay caps requests at max_lifetime, never more than a second under an hour
//     (lifetimeSeconds). pion checks MESSAGE-INTEGRITY, with the AuthHandler's key, over
//     the bytes relay hands it: a capped request must be signed again (clampLifetime),
//     and pion refuses one that is not with 400.
//
//  8. One NONCE a minute (TestPionContractNonces). pion's 401 and 438 answers carry a
//     nonce made from the current minute, the same for every client, and accept it for
//     about an hour. Relied on by: the gate's nonce book (nonces.go), which learns them
//     from pion's answers and keeps maxNonces; were pion to make a nonce per request, a
//     flood of unauthenticated requests would push the nonces of real clients out of the
//     book, and their requests would get 438 again and again.
//
//  9. Closing a relay socket ends its allocation (TestPionContractRelaySocketClosed). When
//     the relay socket's ReadFrom fails because relay closed it, pion deletes the
//     allocation (OnAllocationDeleted) as if its lifetime had run out. Relied on by:
//     Server.EndAllocations (control.go), which ends an allocation for the operator or a
//     revocation by closing its relay socket; pion has no call to delete one.
//
// What relay does not rely on: turn.Server.Close closing accepted TCP/TLS connections
// (it does not; streamListener.closeAll does), pion's answers to requests the gate
// refuses first, and pion's Binding answers (the gate answers Binding itself).
const (
	// pionReadBufSize is pion's read buffer for client and relay sockets (its
	// defaultInboundMTU and rtpMTU).
	pionReadBufSize = 1600

	// pionMaxLifetime: a requested LIFETIME at or above it gets pionDefaultLifetime.
	pionMaxLifetime     = time.Hour
	pionDefaultLifetime = 10 * time.Minute
)
