package signaling

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket per source address: perMinute requests a minute, with
// bursts up to perMinute. Buckets that have refilled are pruned, so the map holds only
// the addresses seen lately.
type rateLimiter struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	buckets map[netip.Addr]*rate.Limiter
}

func newRateLimiter(perMinute int) *rateLimiter {
	l := &rateLimiter{buckets: make(map[netip.Addr]*rate.Limiter)}
	l.setRate(perMinute)
	return l
}

// setRate changes the rate from now on, for the addresses seen already too.
func (l *rateLimiter) setRate(perMinute int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.every, l.burst = rate.Limit(float64(perMinute)/60), perMinute
	now := time.Now()
	for _, b := range l.buckets {
		b.SetLimitAt(now, l.every)
		b.SetBurstAt(now, l.burst)
	}
}

// allow takes a token for ip, or says how long until one is available.
func (l *rateLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[ip] = b
	}
	r := b.ReserveN(now, 1)
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now) // refused: the token is not spent
		return false, wait
	}
	return true, 0
}

// prune forgets buckets that have refilled completely: they hold no information.
func (l *rateLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, ip)
		}
	}
}
