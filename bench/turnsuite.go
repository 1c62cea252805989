//go:build linux

package main

import (
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The TURN measurements of one server in one round. Each phase runs on a fresh server:
//   - idle phase: empty RSS, then M allocations set up by many concurrent clients (the
//     setup rate and its CPU), then RSS again (memory per allocation);
//   - traffic phase: N allocations, a fixed offered rate (CPU per datagram, latency),
//     then rising rates until loss reaches 0.1 % (highest sustained rate).

type setupStats struct {
	Attempted           int     `json:"attempted"`
	OK                  int     `json:"ok"`
	Allocated           int     `json:"allocated"` // Allocate succeeded (holds server memory)
	Failed              int     `json:"failed"`
	FirstError          string  `json:"first_error,omitempty"`
	Seconds             float64 `json:"seconds"`
	PerSec              float64 `json:"allocs_per_s"`
	ServerCPUPerAllocUs float64 `json:"server_cpu_us_per_alloc"`
	GenCPUPerAllocUs    float64 `json:"generator_cpu_us_per_alloc"`
	Retransmits         int64   `json:"retransmits"`
}

type memStats struct {
	EmptyKiB    int64   `json:"empty_rss_kib"`
	LoadedKiB   int64   `json:"loaded_rss_kib"`
	Count       int     `json:"count"`
	PerItemKiB  float64 `json:"kib_each"`
	SettleAfter float64 `json:"settle_s"`
}

type turnRound struct {
	Server     string      `json:"server"`
	Round      int         `json:"round"`
	Setup      setupStats  `json:"setup"`
	Memory     memStats    `json:"memory"`
	STUN       stunStats   `json:"stun"`
	Fixed      loadStats   `json:"fixed_rate"`
	Steps      []loadStats `json:"rate_steps"`
	MaxRTps    float64     `json:"max_sustained_rtps"`
	MaxOffered float64     `json:"max_sustained_offered_rtps"`
	MaxNote    string      `json:"max_note,omitempty"`
	DataPath   string      `json:"data_path,omitempty"` // relay: "kernel" or "userspace" (relay_turn_offload_active)
	Errors     []string    `json:"errors,omitempty"`
}

func (o *options) turnRound(kind string, round int) turnRound {
	r := turnRound{Server: kind, Round: round}
	if o.idleAllocs <= 0 {
		// -idle-allocs 0: no setup-rate or memory phase
	} else if err := o.idlePhase(kind, round, &r); err != nil {
		r.Errors = append(r.Errors, "idle phase: "+err.Error())
		o.logf("  %s idle phase: %v", kind, err)
	}
	if o.stunSockets > 0 {
		if err := o.stunPhase(kind, &r); err != nil {
			r.Errors = append(r.Errors, "STUN phase: "+err.Error())
			o.logf("  %s STUN phase: %v", kind, err)
		}
	}
	if err := o.trafficPhase(kind, round, &r); err != nil {
		r.Errors = append(r.Errors, "traffic phase: "+err.Error())
		o.logf("  %s traffic phase: %v", kind, err)
	}
	return r
}

func (o *options) idlePhase(kind string, round int, r *turnRound) error {
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
	// A real, bound peer address for the permissions and channels (no traffic flows).
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer peer.Close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	n := o.idleAllocs
	conns := make([]*net.UDPConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var ok, allocated, failed atomic.Int64
	var retrans atomic.Int64
	var firstErr atomic.Value
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	cpu0, err := procCPU(srv.pid)
	if err != nil {
		return err
	}
	gen0 := selfCPU()
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.setupConc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(srv.turn))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, "socket: "+err.Error())
					continue
				}
				conns[i] = c
				user, pass := restCredentials(o.secret, fmt.Sprintf("idle%d-%d", round, i), time.Hour)
				s := newTurnSession(goUDP{c}, user, pass)
				err = s.setup(benchChannel, peerAddr)
				retrans.Add(int64(s.retransmits))
				if s.relayed.IsValid() {
					allocated.Add(1)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu1, err := procCPU(srv.pid)
	if err != nil {
		return err
	}
	gen1 := selfCPU()
	st := &r.Setup
	st.Attempted, st.OK, st.Allocated, st.Failed = n, int(ok.Load()), int(allocated.Load()), int(failed.Load())
	st.Retransmits = retrans.Load()
	if e, _ := firstErr.Load().(string); e != "" {
		st.FirstError = e
	}
	st.Seconds = elapsed.Seconds()
	if st.OK > 0 {
		st.PerSec = float64(st.OK) / st.Seconds
		st.ServerCPUPerAllocUs = float64((cpu1 - cpu0).Microseconds()) / float64(st.OK)
		st.GenCPUPerAllocUs = float64((gen1 - gen0).Microseconds()) / float64(st.OK)
	}
	time.Sleep(o.memSettle)
	loaded, err := procRSS(srv.pid)
	if err != nil {
		return err
	}
	r.Memory = memStats{EmptyKiB: empty, LoadedKiB: loaded, Count: st.Allocated, SettleAfter: o.memSettle.Seconds()}
	if st.Allocated > 0 {
		r.Memory.PerItemKiB = float64(loaded-empty) / float64(st.Allocated)
	}
	o.logf("  %-6s setup: %d/%d allocations in %.2fs = %.0f/s (%.0f µs server CPU each, generator %.0f µs each, %d retransmits)%s; RSS %.1f -> %.1f MiB = %.2f KiB per allocation",
		kind, st.OK, n, st.Seconds, st.PerSec, st.ServerCPUPerAllocUs, st.GenCPUPerAllocUs, st.Retransmits, errNote(st.FirstError),
		float64(empty)/1024, float64(loaded)/1024, r.Memory.PerItemKiB)
	return srv.alive()
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return " [first error: " + e + "]"
}

// passes says whether a step sustained its offered rate: under 0.1 % loss, and the
// generator really offered it (otherwise the step measures the generator).
func passes(st *loadStats) bool {
	switch {
	case st.Sent == 0:
		st.Note = "nothing sent"
	case st.SentRTps < 0.98*st.OfferedRTps:
		st.Note = fmt.Sprintf("generator offered only %.0f/s", st.SentRTps)
	case st.LossPct >= 0.1:
		st.Note = fmt.Sprintf("loss %.3f%%", st.LossPct)
	default:
		return true
	}
	return false
}

func (o *options) trafficPhase(kind string, round int, r *turnRound) error {
	o.waitQuiet()
	srv, err := o.startServer(kind)
	if err != nil {
		return err
	}
	defer o.stopServer(srv)
	r.DataPath = srv.dataPath()
	if r.DataPath != "" {
		o.logf("  %-6s data path: %s", kind, r.DataPath)
	}
	load, err := newTurnLoads(o, srv.turn, o.allocs, o.payload, o.genThreads, fmt.Sprintf("load%d", round))
	if err != nil {
		return err
	}
	defer load.close()

	st, err := o.quietRun(load, srv, o.fixedRate, o.warmup, o.window)
	st.Pass = passes(&st)
	r.Fixed = st
	o.logf("  %-6s fixed %6.0f rt/s: %s", kind, o.fixedRate, describeStep(&st))
	if err != nil {
		return err
	}

	step := func(rate float64) (bool, error) {
		if err := load.refreshIfOld(); err != nil {
			return false, err
		}
		st, err := o.quietRun(load, srv, rate, o.stepWarmup, o.stepWindow)
		st.Pass = passes(&st)
		r.Steps = append(r.Steps, st)
		o.logf("  %-6s step  %6.0f rt/s: %s", kind, rate, describeStep(&st))
		if st.Pass && st.DeliveredRTps > r.MaxRTps {
			r.MaxRTps, r.MaxOffered = st.DeliveredRTps, rate
		}
		if !st.Pass && r.MaxNote == "" && st.Note != "" {
			r.MaxNote = fmt.Sprintf("%.0f rt/s: %s", rate, st.Note)
		}
		return st.Pass, err
	}
	lo, hi := 0.0, 0.0
	for _, rate := range o.rates {
		pass, err := step(rate)
		if err != nil {
			return err
		}
		if !pass {
			hi = rate
			break
		}
		lo = rate
	}
	if hi == 0 {
		r.MaxNote = fmt.Sprintf("passed every step up to %.0f rt/s: the real limit is higher", lo)
		return nil
	}
	for i := 0; i < o.bisect && hi-lo > 2000; i++ {
		mid := math.Round((lo+hi)/2/1000) * 1000
		if mid <= lo || mid >= hi {
			break
		}
		pass, err := step(mid)
		if err != nil {
			return err
		}
		if pass {
			lo = mid
		} else {
			hi = mid
		}
	}
	return nil
}

// quietRun runs one step, and again (at most twice more, after waiting for quiet) while
// other processes took more than twice -quiet-pct of a core during its window: a
// neighbour's compile would otherwise pass for the server's limit. It keeps the
// quietest attempt.
func (o *options) quietRun(load *turnLoads, srv *server, rate float64, warmup, window time.Duration) (loadStats, error) {
	best, err := load.run(srv, rate, warmup, window, o.drain)
	for try := 1; err == nil && o.quietWait > 0 && best.OtherCPUPct > 2*o.quietPct && try < 3; try++ {
		o.logf("  %-6s        %6.0f rt/s: other processes took %.0f%% of a core during the window: measuring again", srv.kind, rate, best.OtherCPUPct)
		o.waitQuiet()
		var st loadStats
		if st, err = load.run(srv, rate, warmup, window, o.drain); err == nil && st.OtherCPUPct < best.OtherCPUPct {
			best = st
		}
		best.Retried = true
	}
	return best, err
}

func describeStep(st *loadStats) string {
	verdict := "ok"
	if !st.Pass {
		verdict = "FAIL " + st.Note
	}
	return fmt.Sprintf("delivered %6.0f/s loss %.3f%% rtt p50 %.0f p99 %.0f µs; server %.1f%% CPU = %.2f µs/datagram; machine %.1f%% (ticks %.1f%%) = %.2f µs/datagram; generator %.1f%%, others %.1f%%; drops gen %d srv %d; %s",
		st.DeliveredRTps, st.LossPct, st.RTTp50us, st.RTTp99us, st.ServerCPUPct, st.ServerCPUPerDgUs, st.MachineCPUPct, st.MachineTickPct, st.MachineCPUPerDgUs, st.GenCPUPct, st.OtherCPUPct,
		st.GenDrops, st.ServerDrops, verdict)
}
