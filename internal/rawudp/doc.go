// Package rawudp is the raw UDP socket layer shared by relay's data path and the
// benchmark's traffic generator: non-blocking IPv4 UDP descriptors outside Go's runtime
// poller, datagrams moved in batches with recvmmsg(2) and sendmmsg(2), and epoll. It
// holds every unsafe pointer and raw system call of the two, so that relay/ and bench/
// speak in netip.AddrPort and []byte.
//
// Nothing here allocates per datagram: buffers, message headers, address slots and the
// callbacks handed to the runtime are made once, when a Conn, Batch, Reader or poller is
// made.
//
// What it offers:
//
//   - Conn: a non-blocking IPv4 UDP socket (Open). WriteTo and Write send one datagram,
//     Recv and Send move a Batch. Close is safe against concurrent I/O: no call ever
//     reaches a descriptor number the kernel has handed out again.
//   - Batch: n datagram slots (buffer, length, address) wired together for one
//     recvmmsg/sendmmsg. SendVia sends slots through a *net.UDPConn's RawConn, for
//     sockets that stay in Go's runtime poller (relay's listeners).
//   - Reader: recvmmsg on a *net.UDPConn that blocks in the runtime poller.
//   - Pollers: one epoll poller per Go processor that reads every Conn opened through
//     it and hands each datagram to a Sink, so that a datagram wakes no per-socket
//     goroutine and an idle socket holds none.
//   - Epoll: an epoll set waited on by a locked thread, with nanosecond timeouts (the
//     generator's pacing loop).
//
// On systems other than Linux only what relay needs exists (Conn with WriteTo and Close,
// Pollers with a goroutine per socket, Reader one datagram at a time, TuneBuffers,
// FamilyOf, ListenShards); bench runs on Linux only.
package rawudp
