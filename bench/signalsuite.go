//go:build linux

package main

import (
	"fmt"
	"time"
)

// The signaling measurements of one server (relay or the PeerJS reference server) in one
// round, each phase on a fresh server:
//   - load phase: P peer pairs, a fixed total rate of OFFER-sized messages (CPU per
//     routed message, delivery latency);
//   - idle phase: empty RSS, then I idle peers (HEARTBEAT every 5 s), RSS again.

type signalRound struct {
	Server        string      `json:"server"`
	Round         int         `json:"round"`
	Load          signalStats `json:"load"`
	Memory        memStats    `json:"memory"`
	ConnectPerSec float64     `json:"idle_connects_per_s"`
	IdleClosed    int64       `json:"idle_closed_by_server"`
	Errors        []string    `json:"errors,omitempty"`
}

func (o *options) signalRound(kind string, round int) signalRound {
	r := signalRound{Server: kind, Round: round}
	if err := o.signalLoadPhase(kind, round, &r); err != nil {
		r.Errors = append(r.Errors, "load phase: "+err.Error())
		o.logf("  %s signal load phase: %v", kind, err)
	}
	if o.idlePeers <= 0 {
		// -idle-peers 0: no memory phase
	} else if err := o.signalIdlePhase(kind, round, &r); err != nil {
		r.Errors = append(r.Errors, "idle phase: "+err.Error())
		o.logf("  %s signal idle phase: %v", kind, err)
	}
	return r
}

func (o *options) signalLoadPhase(kind string, round int, r *signalRound) error {
	o.waitQuiet()
	srv, err := o.startServer(kind)
	if err != nil {
		return err
	}
	defer o.stopServer(srv)
	g := newSignalGen(srv)
	peers, err := g.connect(fmt.Sprintf("L%dp", round), 2*o.signalPairs, o.connectConc)
	if err != nil {
		return err
	}
	defer func() {
		closePeers(peers)
		g.readersDone.Wait()
	}()
	st, err := g.load([]*server{srv}, peers, o.signalRate, o.signalBytes, o.warmup, o.window, 500*time.Millisecond)
	for try := 1; err == nil && o.quietWait > 0 && st.OtherCPUPct > 2*o.quietPct && try < 3; try++ {
		o.logf("  %-6s other processes took %.0f%% of a core during the window: measuring again", kind, st.OtherCPUPct)
		o.waitQuiet()
		var again signalStats
		if again, err = g.load([]*server{srv}, peers, o.signalRate, o.signalBytes, o.warmup, o.window, 500*time.Millisecond); err == nil && again.OtherCPUPct < st.OtherCPUPct {
			st = again
		}
		st.Retried = true
	}
	r.Load = st
	o.logf("  %-6s signal %d pairs, %.0f msg/s of %d B: delivered %.0f/s (%.2f%%), p50 %.2f ms p99 %.2f ms; server %.1f%% CPU = %.1f µs/msg; generator %.1f%%, others %.1f%%; closed by server %d",
		kind, o.signalPairs, o.signalRate, st.MessageBytes, st.DeliveredMps, st.DeliveredPct, st.P50ms, st.P99ms,
		st.ServerCPUPct, st.ServerCPUPerMsg, st.GenCPUPct, st.OtherCPUPct, st.ClosedEarly)
	return err
}

func (o *options) signalIdlePhase(kind string, round int, r *signalRound) error {
	o.waitQuiet()
	srv, err := o.startServer(kind)
	if err != nil {
		return err
	}
	defer o.stopServer(srv)
	time.Sleep(o.settle)
	empty, err := procRSS(srv.pid)
	if err != nil {
		return err
	}
	g := newSignalGen(srv)
	t0 := time.Now()
	peers, err := g.connect(fmt.Sprintf("I%dp", round), o.idlePeers, o.connectConc)
	if err != nil {
		return err
	}
	r.ConnectPerSec = float64(len(peers)) / time.Since(t0).Seconds()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		heartbeats(peers, stop)
		close(done)
	}()
	defer func() {
		close(stop)
		<-done
		closePeers(peers)
		g.readersDone.Wait()
	}()
	time.Sleep(o.memSettle)
	loaded, err := procRSS(srv.pid)
	if err != nil {
		return err
	}
	r.IdleClosed = g.closedEarly.Load()
	alive := len(peers) - int(r.IdleClosed)
	r.Memory = memStats{EmptyKiB: empty, LoadedKiB: loaded, Count: alive, SettleAfter: o.memSettle.Seconds()}
	if alive > 0 {
		r.Memory.PerItemKiB = float64(loaded-empty) / float64(alive)
	}
	o.logf("  %-6s idle peers: %d connected at %.0f/s, %d closed by server; RSS %.1f -> %.1f MiB = %.2f KiB per peer",
		kind, len(peers), r.ConnectPerSec, r.IdleClosed, float64(empty)/1024, float64(loaded)/1024, r.Memory.PerItemKiB)
	return srv.alive()
}
