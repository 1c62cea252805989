package main

import (
	"math/bits"
	"sync/atomic"
)

// histogram holds latencies in microseconds with about 0.2 % precision: exact below
// 1024 µs, then 512 sub-buckets per power of two. Counters are atomic so that many
// reader goroutines (signaling) can share one; recording never allocates.
type histogram struct {
	buckets [histBuckets]atomic.Uint32
	count   atomic.Uint64
}

const (
	histLinear  = 1024
	histSub     = 512
	histBuckets = histLinear + 40*histSub
)

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	e := bits.Len64(us) - 10 // >= 1
	i := histLinear + (e-1)*histSub + int(us>>uint(e)) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < histLinear {
		return float64(i)
	}
	e := (i-histLinear)/histSub + 1
	m := uint64((i-histLinear)%histSub + histSub)
	lo := m << uint(e)
	return float64(lo) + float64(uint64(1)<<uint(e))/2
}

func (h *histogram) record(us int64) {
	if us < 0 {
		us = 0
	}
	h.buckets[histIndex(uint64(us))].Add(1)
	h.count.Add(1)
}

// quantile returns the q-quantile (0..1) in microseconds, or 0 with no samples.
func (h *histogram) quantile(q float64) float64 {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var seen uint64
	for i := range h.buckets {
		seen += uint64(h.buckets[i].Load())
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(histBuckets - 1)
}

func (h *histogram) reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
	h.count.Store(0)
}
