package signaling

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per source address: perMinute requests a minute, with
// bursts up to perMinute.
type rateLimiter struct {
	perMinute float64
	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(perMinute int) *rateLimiter {
	return &rateLimiter{perMinute: float64(perMinute), buckets: make(map[netip.Addr]*bucket)}
}

// setRate changes the rate from now on.
func (l *rateLimiter) setRate(perMinute int) {
	l.mu.Lock()
	l.perMinute = float64(perMinute)
	l.mu.Unlock()
}

// allow takes a token for ip, or says how long until one is available.
func (l *rateLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		b = &bucket{tokens: l.perMinute, last: now}
		l.buckets[ip] = b
	}
	b.tokens = min(l.perMinute, b.tokens+now.Sub(b.last).Minutes()*l.perMinute)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.perMinute * float64(time.Minute))
	return false, wait
}

// prune forgets buckets that have refilled completely: they hold no information.
func (l *rateLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Minutes()*l.perMinute >= l.perMinute {
			delete(l.buckets, ip)
		}
	}
}
