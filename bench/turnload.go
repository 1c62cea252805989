//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/relayproject/relay/internal/rawudp"
)

// The TURN traffic generator: N allocations, each on its own client socket with a
// channel bound to one echo peer that the generator also owns. One event loop, on one
// locked OS thread, does everything: it paces raw ChannelData out of the client
// sockets, echoes what reaches the peer socket (recvmmsg, then sendmmsg of the same
// buffers back to their source addresses), and reads the echoed ChannelData back on
// the client sockets (recvmmsg per ready socket). No goroutine is woken per packet and
// nothing is allocated per packet, so the generator takes as little as possible of the
// CPUs it shares with the server.

const (
	benchChannel = 0x4000
	sendBatchMax = 64
	// Payload layout (little endian): sequence number, send time (ns since the
	// generator's base), client index.
	payloadHeader = 8 + 8 + 4
)

type trafficClient struct {
	conn *rawudp.Conn
	sess *turnSession
}

type turnLoad struct {
	server   netip.AddrPort
	clients  []trafficClient
	echoConn *rawudp.Conn
	echoAddr netip.AddrPort
	epoll    *rawudp.Epoll
	pktLen   int
	pace     time.Duration
	setupAt  time.Time

	base   time.Time
	rr     int
	seq    uint64
	single []byte        // one ChannelData datagram for write(2)
	send   *rawudp.Batch // several datagrams for one socket (sendmmsg)
	recv   *rawudp.Batch
	echo   *rawudp.Batch
	ready  []int32    // tags of the sockets epoll reports readable: a client's index, or echoTag
	hist   *histogram // the group's, shared by its loops
	ports  map[uint16]bool
}

// turnLoads is the generator: threads event loops (-gen-threads), each on its own
// locked OS thread with its share of the allocations and an echo peer of its own, paced
// at its share of the offered rate. One loop cannot feed a server that costs the
// machine less than the loop itself: with the kernel data path the relaying happens in
// the generator's own system calls.
type turnLoads struct {
	loops []*turnLoad
	hist  histogram
	base  time.Time
}

// newTurnLoads opens n allocations over threads loops.
func newTurnLoads(o *options, server netip.AddrPort, n, payload, threads int, userPrefix string) (*turnLoads, error) {
	threads = max(1, min(threads, n))
	lg := &turnLoads{base: time.Now()}
	for i := 0; i < threads; i++ {
		share := n / threads
		if i < n%threads {
			share++
		}
		g, err := newTurnLoad(o, server, share, payload, fmt.Sprintf("%s-t%d", userPrefix, i))
		if err != nil {
			lg.close()
			return nil, err
		}
		g.hist, g.base = &lg.hist, lg.base
		lg.loops = append(lg.loops, g)
	}
	return lg, nil
}

func (lg *turnLoads) close() {
	for _, g := range lg.loops {
		g.close()
	}
}

func (lg *turnLoads) refreshIfOld() error {
	for _, g := range lg.loops {
		if err := g.refreshIfOld(); err != nil {
			return err
		}
	}
	return nil
}

func (lg *turnLoads) now() int64 { return int64(time.Since(lg.base)) }

// mine says whether a local UDP port is one of the generator's.
func (lg *turnLoads) mine(p uint16) bool {
	for _, g := range lg.loops {
		if g.ports[p] {
			return true
		}
	}
	return false
}

// newTurnLoad opens the echo peer and n client sockets, and sets up each allocation
// (Allocate, CreatePermission, ChannelBind to the echo peer), conc at a time.
func newTurnLoad(o *options, server netip.AddrPort, n, payload int, userPrefix string) (*turnLoad, error) {
	if payload < payloadHeader {
		payload = payloadHeader
	}
	g := &turnLoad{server: server, pktLen: 4 + payload, pace: o.pace, base: time.Now(), ports: map[uint16]bool{}}
	var err error
	g.echoConn, err = rawudp.Open(rawudp.Options{Local: netip.AddrPortFrom(loopback, 0), Buffer: 8 << 20})
	if err != nil {
		return nil, fmt.Errorf("echo peer socket: %w", err)
	}
	g.echoAddr = g.echoConn.LocalAddr()
	g.ports[g.echoAddr.Port()] = true
	g.clients = make([]trafficClient, n)
	for i := range g.clients {
		c, err := rawudp.Open(rawudp.Options{Local: netip.AddrPortFrom(loopback, 0), Remote: server, Buffer: 1 << 20})
		if err != nil {
			g.close()
			return nil, fmt.Errorf("client socket %d: %w", i, err)
		}
		g.clients[i].conn = c
		g.ports[c.LocalAddr().Port()] = true
	}
	// Set up the allocations concurrently (each waits on its own socket with poll).
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range g.clients {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for w := 0; w < min(16, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				user, pass := restCredentials(o.secret, fmt.Sprintf("%s-%d", userPrefix, i), time.Hour)
				s := newTurnSession(rawUDP{g.clients[i].conn}, user, pass)
				if err := s.setup(benchChannel, g.echoAddr); err != nil {
					errs <- fmt.Errorf("allocation %d: %w", i, err)
					continue
				}
				g.clients[i].sess = s
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		g.close()
		return nil, err
	}
	g.setupAt = time.Now()

	g.epoll, err = rawudp.NewEpoll()
	if err != nil {
		g.close()
		return nil, err
	}
	if err := g.epoll.Add(g.echoConn, echoTag); err != nil {
		g.close()
		return nil, err
	}
	for i, c := range g.clients {
		if err := g.epoll.Add(c.conn, int32(i)); err != nil {
			g.close()
			return nil, err
		}
	}

	g.single = make([]byte, g.pktLen)
	g.send = rawudp.NewBatch(sendBatchMax, g.pktLen)
	bufs := [][]byte{g.single}
	for i := 0; i < g.send.Slots(); i++ {
		bufs = append(bufs, g.send.Buf(i))
	}
	for _, b := range bufs {
		binary.BigEndian.PutUint16(b[0:2], benchChannel)
		binary.BigEndian.PutUint16(b[2:4], uint16(payload))
		for j := 4 + payloadHeader; j < len(b); j++ {
			b[j] = byte(j)
		}
	}
	g.recv = rawudp.NewBatch(32, 2048)
	g.echo = rawudp.NewBatch(64, 2048)
	g.ready = make([]int32, 256)
	return g, nil
}

// echoTag is the echo peer's tag in the epoll set (clients are tagged by index).
const echoTag = -1

func (g *turnLoad) close() {
	for _, c := range g.clients {
		if c.conn != nil {
			_ = c.conn.Close()
		}
	}
	if g.echoConn != nil {
		_ = g.echoConn.Close()
	}
	if g.epoll != nil {
		_ = g.epoll.Close()
	}
}

// refreshIfOld renews the allocations, permissions and channels when a run has gone on
// for two minutes (permissions last five), between steps, never inside a window.
func (g *turnLoad) refreshIfOld() error {
	if time.Since(g.setupAt) < 2*time.Minute {
		return nil
	}
	for i, c := range g.clients {
		s := c.sess
		if err := s.refresh(10 * time.Minute); err != nil {
			return fmt.Errorf("refresh %d: %w", i, err)
		}
		if err := s.createPermission(g.echoAddr); err != nil {
			return fmt.Errorf("refresh %d: %w", i, err)
		}
		if err := s.channelBind(benchChannel, g.echoAddr); err != nil {
			return fmt.Errorf("refresh %d: %w", i, err)
		}
	}
	g.setupAt = time.Now()
	return nil
}

func (g *turnLoad) now() int64 { return int64(time.Since(g.base)) }

// loadStats is one run at one offered rate. A round trip is client -> server -> peer ->
// server -> client: the server handles four datagrams for each.
type loadStats struct {
	OfferedRTps      float64 `json:"offered_rtps"`
	SentRTps         float64 `json:"sent_rtps"`
	DeliveredRTps    float64 `json:"delivered_rtps"`
	Sent             uint64  `json:"sent"`
	Received         uint64  `json:"received"`
	LossPct          float64 `json:"loss_pct"`
	RTTp50us         float64 `json:"rtt_p50_us"`
	RTTp99us         float64 `json:"rtt_p99_us"`
	ServerCPUPct     float64 `json:"server_cpu_pct"` // of one core
	ServerCPUPerRTus float64 `json:"server_cpu_us_per_rt"`
	ServerCPUPerDgUs float64 `json:"server_cpu_us_per_datagram"`
	GenCPUPct        float64 `json:"generator_cpu_pct"`
	GenCPUPerRTus    float64 `json:"generator_cpu_us_per_rt"`
	OtherCPUPct      float64 `json:"other_cpu_pct"` // everything else on the machine, % of one core
	// The whole machine's busy CPU (all CPUs, /proc/stat): what the kernel does on the
	// server's behalf in softirq and in other processes' system calls is charged to no
	// process of the server's, so only this figure compares a kernel data path fairly.
	MachineCPUPct     float64 `json:"machine_cpu_pct"`
	MachineCPUPerDgUs float64 `json:"machine_cpu_us_per_datagram"`
	MachineTickPct    float64 `json:"machine_tick_sampled_pct"` // /proc/stat's busy columns, for comparison
	SendErrors        uint64  `json:"send_errors"`
	Skipped           uint64  `json:"skipped_behind"` // packets the generator could not send in time
	GenDrops          uint64  `json:"generator_socket_drops"`
	ServerDrops       uint64  `json:"server_socket_drops"`
	EchoDrops         uint64  `json:"echo_send_drops"`
	WindowS           float64 `json:"window_s"`
	Pass              bool    `json:"pass"`
	Retried           bool    `json:"retried_after_noise,omitempty"`
	Note              string  `json:"note,omitempty"`
}

// run offers rate round trips per second for warmup+window, then listens for drain more.
// Counts, latencies and CPU cover only packets sent inside the window.
func (lg *turnLoads) run(srv *server, rate float64, warmup, window, drain time.Duration) (st loadStats, err error) {
	lg.hist.reset()
	st.OfferedRTps = rate
	// Kernel drop counters cover the whole step (warm-up and drain included): reading
	// /proc/net/udp inside the loop would stall the pacing.
	genDrops0 := udpDrops(lg.mine)
	srvDrops0 := udpDrops(srv.ownsPort)
	start := lg.now() + int64(time.Millisecond) // every loop starts on the same tick
	wStart := start + int64(warmup)
	wEnd := wStart + int64(window)
	stop := wEnd + int64(drain)
	res := make([]loopResult, len(lg.loops))
	var wg sync.WaitGroup
	for i, g := range lg.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = g.loop(rate/float64(len(lg.loops)), start, wStart, wEnd, stop)
		}()
	}
	// The window's CPU, read here while the loops run on their own threads.
	var srvCPU0, srvCPU1, gen0, gen1, busy0, busy1 time.Duration
	var cpuErr error
	time.Sleep(time.Duration(wStart - lg.now()))
	srvCPU0, cpuErr = procCPU(srv.pid)
	gen0, busy0, ticks0 := selfCPU(), machineBusy(), machineTicks()
	time.Sleep(time.Duration(wEnd - lg.now()))
	srvCPU1, err = procCPU(srv.pid)
	gen1, busy1, ticks1 := selfCPU(), machineBusy(), machineTicks()
	wg.Wait()
	if err = errors.Join(cpuErr, err); err != nil {
		return st, err
	}
	var sentWin, recvWin uint64
	for _, r := range res {
		if r.err != nil {
			return st, r.err
		}
		sentWin += r.sent
		recvWin += r.recv
		st.SendErrors += r.sendErrors
		st.Skipped += r.skipped
		st.EchoDrops += r.echoDrops
	}
	st.GenDrops = udpDrops(lg.mine) - genDrops0
	st.ServerDrops = udpDrops(srv.ownsPort) - srvDrops0
	w := window.Seconds()
	st.WindowS = w
	st.Sent, st.Received = sentWin, recvWin
	st.SentRTps = float64(sentWin) / w
	st.DeliveredRTps = float64(recvWin) / w
	if sentWin > 0 {
		lost := float64(sentWin) - float64(recvWin)
		if lost < 0 {
			lost = 0
		}
		st.LossPct = 100 * lost / float64(sentWin)
	}
	st.RTTp50us = lg.hist.quantile(0.50)
	st.RTTp99us = lg.hist.quantile(0.99)
	srvCPU := srvCPU1 - srvCPU0
	genCPU := gen1 - gen0
	st.ServerCPUPct = 100 * srvCPU.Seconds() / w
	st.GenCPUPct = 100 * genCPU.Seconds() / w
	st.OtherCPUPct = max(0, 100*(busy1-busy0-srvCPU-genCPU).Seconds()/w)
	st.MachineCPUPct = 100 * (busy1 - busy0).Seconds() / w
	st.MachineTickPct = 100 * (ticks1 - ticks0).Seconds() / w
	if recvWin > 0 {
		st.ServerCPUPerRTus = float64(srvCPU.Microseconds()) / float64(recvWin)
		st.ServerCPUPerDgUs = st.ServerCPUPerRTus / 4
		st.GenCPUPerRTus = float64(genCPU.Microseconds()) / float64(recvWin)
		st.MachineCPUPerDgUs = float64((busy1 - busy0).Microseconds()) / float64(recvWin) / 4
	}
	return st, srv.alive()
}

// loopResult is what one loop counted of the datagrams sent inside the window.
type loopResult struct {
	sent, recv, sendErrors, skipped, echoDrops uint64
	err                                        error
}

// loop is one event loop's share of a run: it paces rate round trips per second from
// start, counts what it sends in [wStart, wEnd) and what of that comes back before stop.
func (g *turnLoad) loop(rate float64, start, wStart, wEnd, stop int64) (r loopResult) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // an exiting locked thread would take Pdeathsig children with it
	setTimerSlack(time.Microsecond)
	defer setTimerSlack(50 * time.Microsecond)

	maxBehind := int64(rate * 0.02) // 20 ms of traffic; beyond that the generator is not keeping up
	if maxBehind < 1 {
		maxBehind = 1
	}
	var paced int64 // datagrams the pacing has accounted for
	for {
		now := g.now()
		if now >= stop {
			return r
		}
		if now >= start && now < wEnd {
			due := int64(rate*float64(now-start)/1e9) - paced
			if due > maxBehind {
				if now >= wStart {
					r.skipped += uint64(due - maxBehind)
				}
				paced += due - maxBehind
				due = maxBehind
			}
			if due > 0 {
				paced += due
				sw, e := g.sendDue(int(due), wStart, wEnd)
				r.sent += sw
				if now >= wStart && now < wEnd {
					r.sendErrors += e
				}
			}
		}
		// Sleep until the next datagram is due, but at least pace (so a high rate goes out
		// in small bursts rather than one wake-up per datagram) and at most 1 ms.
		wait := time.Millisecond
		switch {
		case now < start:
			wait = min(time.Duration(start-now), time.Millisecond)
		case now < wEnd:
			next := start + int64(float64(paced+1)*1e9/rate)
			wait = min(max(time.Duration(next-now), g.pace), time.Millisecond)
		}
		n, werr := g.epoll.Wait(g.ready, wait)
		if werr != nil {
			r.err = werr
			return r
		}
		for _, tag := range g.ready[:n] {
			if tag == echoTag {
				r.echoDrops += g.echoAll()
				continue
			}
			r.recv += g.readClient(g.clients[tag].conn, wStart, wEnd)
		}
	}
}

func (g *turnLoad) stamp(b []byte, idx int) int64 {
	ts := g.now()
	g.seq++
	binary.LittleEndian.PutUint64(b[4:12], g.seq)
	binary.LittleEndian.PutUint64(b[12:20], uint64(ts))
	binary.LittleEndian.PutUint32(b[20:24], uint32(idx))
	return ts
}

// sendDue sends due datagrams round-robin over the client sockets: one write(2) each
// while fewer than one per socket is due, one sendmmsg per socket when the loop has
// fallen far enough behind that several are (batches grow with load, by themselves).
func (g *turnLoad) sendDue(due int, wStart, wEnd int64) (sentWin, errs uint64) {
	n := len(g.clients)
	count := func(ts int64) {
		if ts >= wStart && ts < wEnd {
			sentWin++
		}
	}
	for due > 0 {
		per := due / n
		if per == 0 {
			c := g.rr
			g.rr = (g.rr + 1) % n
			ts := g.stamp(g.single, c)
			if _, err := g.clients[c].conn.Write(g.single); err != nil {
				errs++
			} else {
				count(ts)
			}
			due--
			continue
		}
		per = min(per, sendBatchMax)
		for k := 0; k < n; k++ {
			c := (g.rr + k) % n
			var ts [sendBatchMax]int64
			for j := 0; j < per; j++ {
				ts[j] = g.stamp(g.send.Buf(j), c)
				g.send.SetLen(j, g.pktLen)
			}
			done, err := g.clients[c].conn.Send(g.send, 0, per)
			if err != nil {
				errs += uint64(per)
				continue
			}
			for j := 0; j < done; j++ {
				count(ts[j])
			}
			errs += uint64(per - done)
		}
		due -= per * n
	}
	return sentWin, errs
}

// echoAll is the peer: everything waiting on its socket goes straight back to where it
// came from (the allocation's relayed address), in batches.
func (g *turnLoad) echoAll() (drops uint64) {
	b := g.echo
	for {
		n, err := g.echoConn.Recv(b)
		if err != nil || n <= 0 {
			return drops
		}
		for i := 0; i < n; i++ {
			b.SetLen(i, b.Len(i)) // back to its source, as it came
		}
		for off := 0; off < n; {
			k, err := g.echoConn.Send(b, off, n)
			if err != nil || k <= 0 {
				drops += uint64(n - off)
				break
			}
			off += k
		}
		if n < b.Slots() {
			return drops
		}
	}
}

// readClient drains one client socket and accounts the echoed datagrams sent inside the
// window.
func (g *turnLoad) readClient(c *rawudp.Conn, wStart, wEnd int64) (inWindow uint64) {
	b := g.recv
	for {
		n, err := c.Recv(b)
		if err != nil || n <= 0 {
			return inWindow
		}
		now := g.now()
		for i := 0; i < n; i++ {
			p := b.Data(i)
			if len(p) < 4+payloadHeader || p[0]&0xC0 != 0x40 {
				continue // not ChannelData (a late STUN response)
			}
			ts := int64(binary.LittleEndian.Uint64(p[12:20]))
			if ts >= wStart && ts < wEnd {
				inWindow++
				g.hist.record((now - ts) / 1000)
			}
		}
		if n < b.Slots() {
			return inWindow
		}
	}
}
