//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The fleet rounds (-mode fleet): a redis-server and two relay nodes with [cluster]
// redis on it, each phase on fresh processes, with the signal phases' generator:
//   - load phase: P pairs, the two peers of each pair on different nodes, so every
//     message crosses Redis; CPU summed over both nodes, Redis's apart. The same round
//     runs the single-node load phase (signalLoadPhase, one relay) as the baseline
//     for the CPU ratio.
//   - idle phase: I idle peers, alternately on either node: RSS per peer on each node,
//     and Redis's used_memory (INFO memory) per peer.

type fleetRound struct {
	Round  int         `json:"round"`
	Load   signalStats `json:"load"`        // the fleet: both nodes' CPU, Redis apart
	Single signalStats `json:"single_node"` // one relay alone, same load
	// Idle phase: one entry per node, Count being the peers on that node.
	Memory          []memStats `json:"memory_per_node,omitempty"`
	RedisUsedBefore int64      `json:"redis_used_memory_before"`
	RedisUsedAfter  int64      `json:"redis_used_memory_after"`
	RedisPerPeerB   float64    `json:"redis_bytes_per_peer"`
	IdlePeers       int        `json:"idle_peers"`
	IdleClosed      int64      `json:"idle_closed_by_server"`
	Errors          []string   `json:"errors,omitempty"`
}

func (o *options) fleetRound(round int) fleetRound {
	r := fleetRound{Round: round}
	if err := o.fleetLoadPhase(round, &r); err != nil {
		r.Errors = append(r.Errors, "fleet load phase: "+err.Error())
		o.logf("  fleet load phase: %v", err)
	}
	var single signalRound
	if err := o.signalLoadPhase(kindRelay, round, &single); err != nil {
		r.Errors = append(r.Errors, "single-node load phase: "+err.Error())
	}
	r.Single = single.Load
	if o.idlePeers > 0 {
		if err := o.fleetIdlePhase(round, &r); err != nil {
			r.Errors = append(r.Errors, "fleet idle phase: "+err.Error())
			o.logf("  fleet idle phase: %v", err)
		}
	}
	return r
}

// startFleet starts a redis-server and n relay nodes on it; stop stops them all.
func (o *options) startFleet(n int) (redis *server, nodes []*server, stop func(), err error) {
	stop = func() {
		for _, s := range nodes {
			o.stopServer(s)
		}
		if redis != nil {
			o.stopServer(redis)
		}
		o.clusterRedis = ""
	}
	if redis, err = o.startServer(kindRedis); err != nil {
		return nil, nil, stop, err
	}
	o.clusterRedis = redis.redis
	for i := 0; i < n; i++ {
		s, err := o.startServer(kindRelay)
		if err != nil {
			stop()
			return nil, nil, func() {}, fmt.Errorf("node %d: %w", i+1, err)
		}
		nodes = append(nodes, s)
	}
	o.clusterRedis = ""
	return redis, nodes, stop, nil
}

func fleetGen(redis *server, nodes []*server) *signalGen {
	g := newSignalGen(nodes[0])
	for _, n := range nodes {
		g.urls = append(g.urls, n.signalURL("ws")+"/peerjs?key=peerjs")
	}
	g.apart = redis
	return g
}

func (o *options) fleetLoadPhase(round int, r *fleetRound) error {
	o.waitQuiet()
	redis, nodes, stop, err := o.startFleet(2)
	if err != nil {
		return err
	}
	defer stop()
	g := fleetGen(redis, nodes)
	peers, err := g.connect(fmt.Sprintf("F%dp", round), 2*o.signalPairs, o.connectConc)
	if err != nil {
		return err
	}
	defer func() {
		closePeers(peers)
		g.readersDone.Wait()
	}()
	st, err := g.load(nodes, peers, o.signalRate, o.signalBytes, o.warmup, o.window, 500*time.Millisecond)
	r.Load = st
	o.logf("  fleet  %d pairs across 2 nodes, %.0f msg/s offered of %d B: sent %.0f/s, delivered %.0f/s (%.2f%%, %d lost), p50 %.2f ms p99 %.2f ms; nodes %.1f%% CPU = %.1f µs/msg, redis %.1f%% = %.1f µs/msg; generator %.1f%%, others %.1f%%; closed by server %d, write errors %d",
		o.signalPairs, o.signalRate, st.MessageBytes, st.SentMps, st.DeliveredMps, st.DeliveredPct, lost(st), st.P50ms, st.P99ms,
		st.ServerCPUPct, st.ServerCPUPerMsg, st.RedisCPUPct, st.RedisCPUPerMsg, st.GenCPUPct, st.OtherCPUPct, st.ClosedEarly, st.WriteErrors)
	return err
}

// lost is what was sent in the window and not delivered (after the drain).
func lost(st signalStats) int64 { return int64(st.Sent) - int64(st.Delivered) }

func (o *options) fleetIdlePhase(round int, r *fleetRound) error {
	o.waitQuiet()
	redis, nodes, stop, err := o.startFleet(2)
	if err != nil {
		return err
	}
	defer stop()
	time.Sleep(o.settle)
	empty := make([]int64, len(nodes))
	for i, n := range nodes {
		if empty[i], err = procRSS(n.pid); err != nil {
			return err
		}
	}
	if r.RedisUsedBefore, err = redisUsedMemory(redis.redis); err != nil {
		return err
	}
	g := fleetGen(redis, nodes)
	peers, err := g.connect(fmt.Sprintf("G%dp", round), o.idlePeers, o.connectConc)
	if err != nil {
		return err
	}
	stopHB := make(chan struct{})
	done := make(chan struct{})
	go func() {
		heartbeats(peers, stopHB)
		close(done)
	}()
	defer func() {
		close(stopHB)
		<-done
		closePeers(peers)
		g.readersDone.Wait()
	}()
	time.Sleep(o.memSettle)
	if r.RedisUsedAfter, err = redisUsedMemory(redis.redis); err != nil {
		return err
	}
	r.IdleClosed = g.closedEarly.Load()
	alive := len(peers) - int(r.IdleClosed)
	r.IdlePeers = alive
	if alive > 0 {
		r.RedisPerPeerB = float64(r.RedisUsedAfter-r.RedisUsedBefore) / float64(alive)
	}
	for i, n := range nodes {
		loaded, err := procRSS(n.pid)
		if err != nil {
			return err
		}
		// Peers alternate over the nodes; closures are not told apart per node.
		count := (len(peers) - i + len(nodes) - 1) / len(nodes)
		m := memStats{EmptyKiB: empty[i], LoadedKiB: loaded, Count: count, SettleAfter: o.memSettle.Seconds()}
		if count > 0 {
			m.PerItemKiB = float64(loaded-empty[i]) / float64(count)
		}
		r.Memory = append(r.Memory, m)
		o.logf("  fleet  node %d: %d idle peers, RSS %.1f -> %.1f MiB = %.2f KiB per peer", i+1, count,
			float64(empty[i])/1024, float64(loaded)/1024, m.PerItemKiB)
	}
	o.logf("  fleet  redis used_memory %.1f -> %.1f MiB = %.0f B per peer (%d peers, %d closed by server)",
		float64(r.RedisUsedBefore)/(1<<20), float64(r.RedisUsedAfter)/(1<<20), r.RedisPerPeerB, alive, r.IdleClosed)
	for _, n := range nodes {
		if err := n.alive(); err != nil {
			return err
		}
	}
	return redis.alive()
}

// redisUsedMemory is used_memory from INFO memory: the bytes Redis's allocator holds
// for data and overhead.
func redisUsedMemory(addr string) (int64, error) {
	info, err := redisCommand(addr, "INFO memory")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis %s: no used_memory in INFO memory", addr)
}

// redisCommand sends one inline command and returns its simple-string or bulk reply:
// the harness needs PING and INFO only, not a client library.
func redisCommand(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("redis %s: bad reply %q", addr, line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	default:
		return "", fmt.Errorf("redis %s: %s: %q", addr, cmd, line)
	}
}
