//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// row is one line of the summary: the medians over rounds of one metric for relay and
// the reference server, their ratio, and the target when the metric has one.
type row struct {
	Section  string  `json:"section"`
	Metric   string  `json:"metric"`
	Relay    float64 `json:"relay"`
	Ref      float64 `json:"reference"`
	RefName  string  `json:"reference_name"`
	Ratio    float64 `json:"ratio,omitempty"` // relay / reference
	Target   string  `json:"target,omitempty"`
	Met      *bool   `json:"met,omitempty"`
	Rounds   string  `json:"rounds"` // per-round values, relay then reference
	format   string
	hasRelay bool
	hasRef   bool
}

type target struct {
	text  string
	check func(relay, ref, ratio float64) bool
}

func ratioAtMost(x float64) *target {
	return &target{fmt.Sprintf("≤ %.2f×", x), func(_, _, r float64) bool { return r <= x }}
}
func ratioAtLeast(x float64) *target {
	return &target{fmt.Sprintf("≥ %.2f×", x), func(_, _, r float64) bool { return r >= x }}
}
func relayBelow(x float64, text string) *target {
	return &target{text, func(v, _, _ float64) bool { return v < x }}
}
func relayAtLeast(x float64, text string) *target {
	return &target{text, func(v, _, _ float64) bool { return v >= x }}
}
func relayAtMost(x float64, text string) *target {
	return &target{text, func(v, _, _ float64) bool { return v <= x }}
}

const maxRateMetric = "highest sustained rate, loss < 0.1% (round trips/s)"

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func collect[T any](rounds []T, f func(*T) (float64, bool)) []float64 {
	var out []float64
	for i := range rounds {
		if v, ok := f(&rounds[i]); ok {
			out = append(out, v)
		}
	}
	return out
}

func makeRow[T any](section, metric, format, refName string, relay, ref []T, f func(*T) (float64, bool), t *target) row {
	a, b := collect(relay, f), collect(ref, f)
	r := row{Section: section, Metric: metric, RefName: refName, format: format, hasRelay: len(a) > 0, hasRef: len(b) > 0}
	r.Relay, r.Ref = median(a), median(b)
	// A side with no value is 0 with has* false, not NaN, which JSON cannot hold.
	if !r.hasRelay {
		r.Relay = 0
	}
	if !r.hasRef {
		r.Ref = 0
	}
	per := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf(format, x)
		}
		return strings.Join(s, " ")
	}
	r.Rounds = per(a) + " | " + per(b)
	if r.hasRelay && r.hasRef && r.Ref != 0 {
		r.Ratio = r.Relay / r.Ref
	}
	if t != nil {
		r.Target = t.text
		if r.hasRelay && (r.hasRef || !strings.Contains(t.text, "×")) {
			met := t.check(r.Relay, r.Ref, r.Ratio)
			r.Met = &met
		}
	}
	return r
}

func (o *options) summarize(res *results) []row {
	var rows []row
	if o.wantTURN() {
		rl, ct := res.TURN[kindRelay], res.TURN[kindCoturn]
		fixed := func(f func(*loadStats) float64) func(*turnRound) (float64, bool) {
			return func(r *turnRound) (float64, bool) { return f(&r.Fixed), r.Fixed.Received > 0 }
		}
		fr := fmt.Sprintf("%.0fk", o.fixedRate/1000)
		sec := "TURN: relay vs coturn"
		rows = append(rows,
			makeRow(sec, "server CPU per relayed datagram at "+fr+" rt/s (µs)", "%.2f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.ServerCPUPerDgUs }), ratioAtMost(0.7)),
			makeRow(sec, "server CPU per echoed round trip (4 datagrams) (µs)", "%.2f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.ServerCPUPerRTus }), nil),
			makeRow(sec, "server + generator CPU per round trip (µs): what the machine spends", "%.2f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.ServerCPUPerRTus + s.GenCPUPerRTus }), nil),
			makeRow(sec, "whole machine's busy CPU per relayed datagram at "+fr+" rt/s (µs)", "%.2f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.MachineCPUPerDgUs }), nil),
			makeRow(sec, "server CPU at "+fr+" rt/s (% of one core)", "%.1f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.ServerCPUPct }), nil),
			makeRow(sec, "round trip p50 at "+fr+" rt/s (µs)", "%.0f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.RTTp50us }), nil),
			makeRow(sec, "round trip p99 at "+fr+" rt/s (µs)", "%.0f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.RTTp99us }), nil),
			makeRow(sec, "loss at "+fr+" rt/s (%)", "%.3f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.LossPct }), nil),
			makeRow(sec, maxRateMetric, "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.MaxRTps, len(r.Steps) > 0 }, ratioAtLeast(1.5)),
			makeRow(sec, "  same, in relayed datagrams/s (×4)", "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return 4 * r.MaxRTps, len(r.Steps) > 0 }, nil),
			makeRow(sec, fmt.Sprintf("STUN Binding responses/s, %d sockets × %d in flight", o.stunSockets, o.stunOutstanding), "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.STUN.PerSec, r.STUN.Responses > 0 }, relayAtLeast(200000, "≥ 200k/s")),
			makeRow(sec, "server CPU per Binding response (µs)", "%.2f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.STUN.ServerUsPer, r.STUN.Responses > 0 }, nil),
			makeRow(sec, fmt.Sprintf("allocation setup rate, Allocate+CreatePermission+ChannelBind, %d clients (/s)", o.setupConc), "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.Setup.PerSec, r.Setup.OK > 0 }, ratioAtLeast(1.0)),
			makeRow(sec, "server CPU per allocation setup (µs)", "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.Setup.ServerCPUPerAllocUs, r.Setup.OK > 0 }, nil),
			makeRow(sec, fmt.Sprintf("RSS per idle allocation, %d allocations (KiB)", o.idleAllocs), "%.2f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.Memory.PerItemKiB, r.Memory.Count > 0 }, relayAtMost(10, "≤ 10 KiB")),
			makeRow(sec, "allocations actually held in the memory phase", "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return float64(r.Memory.Count), r.Memory.EmptyKiB > 0 }, nil),
			makeRow(sec, "empty server RSS (MiB)", "%.1f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return float64(r.Memory.EmptyKiB) / 1024, r.Memory.EmptyKiB > 0 }, nil),
			makeRow(sec, "generator CPU per allocation setup (µs)", "%.0f", kindCoturn, rl, ct,
				func(r *turnRound) (float64, bool) { return r.Setup.GenCPUPerAllocUs, r.Setup.OK > 0 }, nil),
			makeRow(sec, "generator CPU at "+fr+" rt/s (% of one core)", "%.1f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.GenCPUPct }), nil),
			makeRow(sec, "other processes' CPU during the "+fr+" window (% of one core)", "%.1f", kindCoturn, rl, ct,
				fixed(func(s *loadStats) float64 { return s.OtherCPUPct }), nil),
		)
	}
	if o.wantSignal() {
		rows = append(rows, o.signalRows("Signaling: relay vs PeerJS server (npm peer)", res.Signal, ratioAtMost(0.8))...)
	}
	if o.wantWSS() {
		rows = append(rows, o.signalRows("Signaling over TLS (wss): relay vs PeerJS server (npm peer)", res.WSS, relayAtMost(4, "≤ 4 KiB"))...)
	}
	if o.wantFleet() {
		rows = append(rows, o.fleetRows(res.Fleet)...)
	}
	return rows
}

const fleetSection = "Fleet: 2 relay nodes + redis-server vs 1 relay alone"

// fleetRows compare the fleet's load phase with the single node's of the same round
// (the reference column); the memory rows have no reference.
func (o *options) fleetRows(fl []fleetRound) []row {
	single := make([]fleetRound, len(fl))
	for i := range fl {
		single[i].Load = fl[i].Single
	}
	load := func(f func(*signalStats) float64) func(*fleetRound) (float64, bool) {
		return func(r *fleetRound) (float64, bool) { return f(&r.Load), r.Load.Delivered > 0 }
	}
	node := func(i int) func(*fleetRound) (float64, bool) {
		return func(r *fleetRound) (float64, bool) {
			if i >= len(r.Memory) {
				return 0, false
			}
			return r.Memory[i].PerItemKiB, r.Memory[i].Count > 0
		}
	}
	mr := fmt.Sprintf("%.0fk msg/s offered", o.signalRate/1000)
	sec, ref := fleetSection, "single node"
	return []row{
		makeRow(sec, "server CPU per routed message, both nodes, at "+mr+" (µs)", "%.1f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.ServerCPUPerMsg }), ratioAtMost(2)),
		makeRow(sec, "Redis CPU per routed message, apart (µs)", "%.1f", ref, fl, nil,
			load(func(s *signalStats) float64 { return s.RedisCPUPerMsg }), nil),
		makeRow(sec, "server CPU, both nodes (% of one core)", "%.1f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.ServerCPUPct }), nil),
		makeRow(sec, "Redis CPU (% of one core)", "%.1f", ref, fl, nil,
			load(func(s *signalStats) float64 { return s.RedisCPUPct }), nil),
		makeRow(sec, "messages sent in the window (/s)", "%.0f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.SentMps }), nil),
		makeRow(sec, "messages delivered (/s)", "%.0f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.DeliveredMps }), nil),
		makeRow(sec, "messages lost (sent in the window, not delivered)", "%.0f", ref, fl, single,
			load(func(s *signalStats) float64 { return float64(lost(*s)) }), relayAtMost(0, "0")),
		makeRow(sec, "delivery latency p50 (ms)", "%.2f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.P50ms }), nil),
		makeRow(sec, "delivery latency p99 (ms)", "%.2f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.P99ms }), relayBelow(15, "< 15 ms")),
		makeRow(sec, fmt.Sprintf("RSS per idle peer, node 1, %d peers over 2 nodes (KiB)", o.idlePeers), "%.2f", ref, fl, nil,
			node(0), relayAtMost(2, "≤ 2 KiB")),
		makeRow(sec, "RSS per idle peer, node 2 (KiB)", "%.2f", ref, fl, nil,
			node(1), relayAtMost(2, "≤ 2 KiB")),
		makeRow(sec, "Redis used_memory per idle peer (B)", "%.0f", ref, fl, nil,
			func(r *fleetRound) (float64, bool) { return r.RedisPerPeerB, r.IdlePeers > 0 }, nil),
		makeRow(sec, "generator CPU (% of one core)", "%.1f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.GenCPUPct }), nil),
		makeRow(sec, "other processes' CPU during the window (% of one core)", "%.1f", ref, fl, single,
			load(func(s *signalStats) float64 { return s.OtherCPUPct }), nil),
	}
}

// signalRows are the summary rows of the signal phases (plain or wss); memory is the
// target for RSS per idle peer.
func (o *options) signalRows(sec string, by map[string][]signalRound, memory *target) []row {
	rl, pj := by[kindRelay], by[kindPeer]
	load := func(f func(*signalStats) float64) func(*signalRound) (float64, bool) {
		return func(r *signalRound) (float64, bool) { return f(&r.Load), r.Load.Delivered > 0 }
	}
	mr := fmt.Sprintf("%.0fk msg/s", o.signalRate/1000)
	return []row{
		makeRow(sec, "server CPU per routed message at "+mr+" (µs)", "%.1f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.ServerCPUPerMsg }), ratioAtMost(0.6)),
		makeRow(sec, "server CPU at "+mr+" (% of one core)", "%.1f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.ServerCPUPct }), nil),
		makeRow(sec, "delivery latency p50 (ms)", "%.2f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.P50ms }), nil),
		makeRow(sec, "delivery latency p99 (ms)", "%.2f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.P99ms }), relayBelow(10, "< 10 ms")),
		makeRow(sec, "messages delivered (%)", "%.2f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.DeliveredPct }), nil),
		makeRow(sec, fmt.Sprintf("RSS per idle peer, %d peers (KiB)", o.idlePeers), "%.2f", kindPeer, rl, pj,
			func(r *signalRound) (float64, bool) { return r.Memory.PerItemKiB, r.Memory.Count > 0 }, memory),
		makeRow(sec, "empty server RSS (MiB)", "%.1f", kindPeer, rl, pj,
			func(r *signalRound) (float64, bool) { return float64(r.Memory.EmptyKiB) / 1024, r.Memory.EmptyKiB > 0 }, nil),
		makeRow(sec, "generator CPU at "+mr+" (% of one core)", "%.1f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.GenCPUPct }), nil),
		makeRow(sec, "other processes' CPU during the window (% of one core)", "%.1f", kindPeer, rl, pj,
			load(func(s *signalStats) float64 { return s.OtherCPUPct }), nil),
	}
}

func (o *options) report(res *results) error {
	res.Summary = o.summarize(res)
	res.DataPath = o.dataPathRows(res)
	w := os.Stdout
	fmt.Fprintf(w, "# relay benchmark\n\n")
	fmt.Fprintf(w, "Command: `%s`\n\n", res.Command)
	m := res.Machine
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, Linux %s, load average at start %s, open-file limit %d; %s; %s",
		m.CPUs, m.CPUModel, m.Kernel, m.LoadAvg, m.NoFileLimit, m.GoVersion, m.Relay)
	if m.RelaySource != "" {
		fmt.Fprintf(w, " (%s)", m.RelaySource)
	}
	if m.Coturn != "" {
		fmt.Fprintf(w, "; coturn %s", m.Coturn)
	}
	if m.CoturnDeb != "" {
		fmt.Fprintf(w, "; coturn-debian %s", m.CoturnDeb)
	}
	if m.PeerServer != "" {
		fmt.Fprintf(w, "; %s on node %s", m.PeerServer, m.Node)
	}
	fmt.Fprintf(w, ". %d round(s), medians, %.0f s in all.\n", o.rounds, res.Seconds)
	if res.BusyStarts > 0 {
		fmt.Fprintf(w, "\n**Noise warning**: %d phase(s) started while other processes used more than %.0f%% of a core (see the \"other processes\" rows).\n", res.BusyStarts, o.quietPct)
	}

	section := ""
	for _, r := range res.Summary {
		if r.Section != section {
			section = r.Section
			ref := "coturn"
			if strings.HasPrefix(section, "Signaling") {
				ref = "peer"
			}
			head := "relay"
			if section == fleetSection {
				head, ref = "fleet", "single node"
			}
			fmt.Fprintf(w, "\n## %s\n\n| metric | %s | %s | ratio | target | met? |\n|---|---:|---:|---:|---|---|\n", section, head, ref)
		}
		cell := func(v float64, ok bool) string {
			if !ok || math.IsNaN(v) {
				return "—"
			}
			return fmt.Sprintf(r.format, v)
		}
		ratio := "—"
		if r.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		met := ""
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "**yes**"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Metric, cell(r.Relay, r.hasRelay), cell(r.Ref, r.hasRef), ratio, r.Target, met)
	}
	o.writeDataPath(w, res)
	o.writeRounds(w, res)
	if o.wantFleet() {
		writeFleetRounds(w, res.Fleet)
	}
	if o.plotPath != "" && o.wantTURN() {
		if err := plotThroughput(o.plotPath, o.rates, res); err != nil {
			return fmt.Errorf("-plot: %w", err)
		}
		fmt.Fprintf(w, "\nPlot: %s\n", o.plotPath)
	}
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if dir := filepath.Dir(o.jsonPath); dir != "" {
			_ = os.MkdirAll(dir, 0o755)
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "JSON: %s\n", o.jsonPath)
	}
	return nil
}

// writeRounds lists what each round measured, so a median can be checked against its
// spread, and any errors.
func (o *options) writeRounds(w io.Writer, res *results) {
	if o.wantTURN() && len(res.TURN) > 0 {
		fmt.Fprintf(w, "\n### TURN, per round\n\n| round | server | µs/datagram at %.0fk | max sustained rt/s | limit | setups/s | KiB/allocation | errors |\n|---|---|---:|---:|---|---:|---:|---|\n", o.fixedRate/1000)
		for _, k := range turnKinds {
			for _, r := range res.TURN[k] {
				fmt.Fprintf(w, "| %d | %s | %.2f | %.0f | %s | %.0f | %.2f | %s |\n", r.Round, k, r.Fixed.ServerCPUPerDgUs,
					r.MaxRTps, r.MaxNote, r.Setup.PerSec, r.Memory.PerItemKiB, oneLine(append(r.Errors, setupNote(r.Setup)...)))
			}
		}
	}
	for _, ph := range []struct {
		title string
		want  bool
		by    map[string][]signalRound
	}{{"Signaling", o.wantSignal(), res.Signal}, {"Signaling over TLS (wss)", o.wantWSS(), res.WSS}} {
		if !ph.want || len(ph.by) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n### %s, per round\n\n| round | server | µs/message | p50 ms | p99 ms | delivered %% | KiB/peer | peers closed by server | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n", ph.title)
		for _, k := range []string{kindRelay, kindPeer} {
			for _, r := range ph.by[k] {
				fmt.Fprintf(w, "| %d | %s | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %s |\n", r.Round, k, r.Load.ServerCPUPerMsg,
					r.Load.P50ms, r.Load.P99ms, r.Load.DeliveredPct, r.Memory.PerItemKiB, r.Load.ClosedEarly+r.IdleClosed, oneLine(r.Errors))
			}
		}
	}
}

// writeFleetRounds lists each fleet round with its errors.
func writeFleetRounds(w io.Writer, fl []fleetRound) {
	if len(fl) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Fleet, per round\n\n| round | µs/message fleet (redis) | single | sent/s | delivered/s | lost | p99 ms | KiB/peer node 1, node 2 | Redis B/peer | errors |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---|\n")
	for _, r := range fl {
		mem := make([]string, len(r.Memory))
		for i, m := range r.Memory {
			mem[i] = fmt.Sprintf("%.2f", m.PerItemKiB)
		}
		fmt.Fprintf(w, "| %d | %.1f (%.1f) | %.1f | %.0f | %.0f | %d | %.2f | %s | %.0f | %s |\n", r.Round, r.Load.ServerCPUPerMsg, r.Load.RedisCPUPerMsg,
			r.Single.ServerCPUPerMsg, r.Load.SentMps, r.Load.DeliveredMps, lost(r.Load), r.Load.P99ms, strings.Join(mem, ", "), r.RedisPerPeerB, oneLine(r.Errors))
	}
}

func setupNote(s setupStats) []string {
	if s.Failed == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%d of %d setups failed (first: %s)", s.Failed, s.Attempted, s.FirstError)}
}

func oneLine(errs []string) string {
	s := strings.Join(errs, "; ")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > 300 {
		s = s[:300] + " …"
	}
	return strings.ReplaceAll(s, "|", "/")
}
