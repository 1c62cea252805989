//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// The TURN data path table: relay's kernel path (kind relay, [turn] offload on), its
// userspace path (relay-userspace) and coturn (and a second coturn, coturn-debian), each
// metric's median over rounds side by side, with relay's two paths as ratios to coturn.
// The kernel path relays in softirq and inside the generator's own system calls, charged
// to no process of relay's: the whole machine's busy CPU is the figure that compares it
// fairly (the generator is the same for every server).

type dataPathRow struct {
	Metric      string             `json:"metric"`
	Values      map[string]float64 `json:"values"` // by server kind
	Rounds      map[string]string  `json:"rounds"`
	KernelRatio float64            `json:"kernel_vs_coturn,omitempty"`
	UserRatio   float64            `json:"userspace_vs_coturn,omitempty"`
	Target      string             `json:"target,omitempty"`
	Met         *bool              `json:"met,omitempty"`
	format      string
}

// bestStep is the passing rate step with the most delivered, the one MaxRTps reports.
func bestStep(r *turnRound) (*loadStats, bool) {
	var best *loadStats
	for i := range r.Steps {
		s := &r.Steps[i]
		if s.Pass && (best == nil || s.DeliveredRTps > best.DeliveredRTps) {
			best = s
		}
	}
	return best, best != nil
}

func (o *options) dataPathRows(res *results) []dataPathRow {
	if !o.has(kindRelayUser) && !o.has(kindCoturnDebian) {
		return nil // the plain relay vs coturn table says it all
	}
	fr := fmt.Sprintf("%.0fk", o.fixedRate/1000)
	fixed := func(f func(*loadStats) float64) func(*turnRound) (float64, bool) {
		return func(r *turnRound) (float64, bool) { return f(&r.Fixed), r.Fixed.Received > 0 }
	}
	best := func(f func(*loadStats) float64) func(*turnRound) (float64, bool) {
		return func(r *turnRound) (float64, bool) {
			s, ok := bestStep(r)
			if !ok {
				return 0, false
			}
			return f(s), true
		}
	}
	type spec struct {
		metric, format string
		f              func(*turnRound) (float64, bool)
		target         string
		check          func(kernel, ratio float64) bool
	}
	specs := []spec{
		{"whole machine's busy CPU per relayed datagram at " + fr + " rt/s (µs)", "%.2f",
			fixed(func(s *loadStats) float64 { return s.MachineCPUPerDgUs }), "kernel ≤ 0.60×", func(_, r float64) bool { return r <= 0.6 }},
		{"server process CPU per relayed datagram at " + fr + " rt/s (µs)", "%.2f",
			fixed(func(s *loadStats) float64 { return s.ServerCPUPerDgUs }), "", nil},
		{"server process CPU at " + fr + " rt/s (% of one core)", "%.1f",
			fixed(func(s *loadStats) float64 { return s.ServerCPUPct }), "", nil},
		{maxRateMetric, "%.0f",
			func(r *turnRound) (float64, bool) { return r.MaxRTps, len(r.Steps) > 0 }, "kernel ≥ 1.50×", func(_, r float64) bool { return r >= 1.5 }},
		{"  same, relayed datagrams/s (×4)", "%.0f",
			func(r *turnRound) (float64, bool) { return 4 * r.MaxRTps, len(r.Steps) > 0 }, "", nil},
		{"server process CPU at that rate, the flood (% of one core)", "%.1f",
			best(func(s *loadStats) float64 { return s.ServerCPUPct }), "kernel ≤ 5 %", func(k, _ float64) bool { return k <= 5 }},
		{"whole machine's busy CPU per relayed datagram at that rate (µs)", "%.2f",
			best(func(s *loadStats) float64 { return s.MachineCPUPerDgUs }), "", nil},
		{"whole machine's busy CPU at that rate (% of one core)", "%.1f",
			best(func(s *loadStats) float64 { return s.MachineCPUPct }), "", nil},
		{"round trip p50 at " + fr + " rt/s (µs)", "%.0f",
			fixed(func(s *loadStats) float64 { return s.RTTp50us }), "", nil},
		{"round trip p99 at " + fr + " rt/s (µs)", "%.0f",
			fixed(func(s *loadStats) float64 { return s.RTTp99us }), "", nil},
		{"generator CPU at " + fr + " rt/s (% of one core)", "%.1f",
			fixed(func(s *loadStats) float64 { return s.GenCPUPct }), "", nil},
		{"other processes' CPU during the " + fr + " window (% of one core)", "%.1f",
			fixed(func(s *loadStats) float64 { return s.OtherCPUPct }), "", nil},
	}
	var rows []dataPathRow
	for _, sp := range specs {
		row := dataPathRow{Metric: sp.metric, Values: map[string]float64{}, Rounds: map[string]string{}, Target: sp.target, format: sp.format}
		for _, k := range turnKinds {
			v := collect(res.TURN[k], sp.f)
			if len(v) == 0 {
				continue
			}
			row.Values[k] = median(v)
			per := make([]string, len(v))
			for i, x := range v {
				per[i] = fmt.Sprintf(sp.format, x)
			}
			row.Rounds[k] = strings.Join(per, " ")
		}
		ref, hasRef := row.Values[kindCoturn]
		if k, ok := row.Values[kindRelay]; ok && hasRef && ref != 0 {
			row.KernelRatio = k / ref
		}
		if u, ok := row.Values[kindRelayUser]; ok && hasRef && ref != 0 {
			row.UserRatio = u / ref
		}
		if k, ok := row.Values[kindRelay]; ok && sp.check != nil && (row.KernelRatio != 0 || !strings.Contains(sp.target, "×")) {
			met := sp.check(k, row.KernelRatio)
			row.Met = &met
		}
		rows = append(rows, row)
	}
	return rows
}

// writeDataPath prints the data path table, a column per TURN server that ran.
func (o *options) writeDataPath(w io.Writer, res *results) {
	rows := res.DataPath
	if len(rows) == 0 {
		return
	}
	var kinds []string
	for _, k := range turnKinds {
		if len(res.TURN[k]) > 0 {
			kinds = append(kinds, k)
		}
	}
	fmt.Fprintf(w, "\n## TURN data path: relay's kernel path, relay's userspace path, coturn\n\n")
	for _, r := range res.TURN[kindRelay] {
		if r.DataPath != "kernel" {
			fmt.Fprintf(w, "**Note**: in round %d the relay column ran the %q path, not the kernel's (turn.offload could not run here).\n\n", r.Round, r.DataPath)
		}
	}
	fmt.Fprintf(w, "| metric |")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s |", turnName(k, res))
	}
	fmt.Fprintf(w, " kernel ÷ coturn | userspace ÷ coturn | target | met? |\n|---|")
	for range kinds {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintf(w, "---:|---:|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |", r.Metric)
		for _, k := range kinds {
			v, ok := r.Values[k]
			if !ok || math.IsNaN(v) {
				fmt.Fprintf(w, " — |")
				continue
			}
			fmt.Fprintf(w, " "+r.format+" |", v)
		}
		ratio := func(x float64) string {
			if x == 0 {
				return "—"
			}
			return fmt.Sprintf("%.2f×", x)
		}
		met := ""
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "**yes**"
			}
		}
		fmt.Fprintf(w, " %s | %s | %s | %s |\n", ratio(r.KernelRatio), ratio(r.UserRatio), r.Target, met)
	}
}

// turnName is how the report and the plot name a TURN server: relay by its data path
// when it says (relay_turn_offload_active), coturn by its version.
func turnName(k string, res *results) string {
	switch k {
	case kindRelay:
		if len(res.TURN[k]) > 0 && res.TURN[k][0].DataPath == "kernel" {
			return "relay, kernel path"
		}
		if len(res.TURN[kindRelayUser]) > 0 {
			return "relay, kernel path where available"
		}
		return "relay"
	case kindRelayUser:
		return "relay, userspace path"
	case kindCoturn:
		if res.Machine.Coturn != "" {
			return "coturn " + res.Machine.Coturn
		}
	case kindCoturnDebian:
		return "coturn " + res.Machine.CoturnDeb + " (Debian)"
	}
	return k
}
