package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type selfState struct {
	mu sync.Mutex
	a  Announcement
}

func (s *selfState) get() Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.a
}

func (s *selfState) set(f func(*Announcement)) {
	s.mu.Lock()
	f(&s.a)
	s.mu.Unlock()
}

func names(as []Announcement) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Node)
	}
	return out
}

// ICE steering: up to n non-draining nodes, own region first, least loaded first; a
// node that starts draining leaves the answers within 2 s; one that stops announcing
// leaves within the TTL.
func TestClusterSteering(t *testing.T) {
	s := startRedis(t)
	ttl := 1500 * time.Millisecond
	regs := []*Registry{node(t, s, "a", ttl), node(t, s, "b", ttl), node(t, s, "c", ttl)}
	states := []*selfState{
		{a: Announcement{Region: "eu", TURN: []string{"turn:a:3478"}, Active: 50, Max: 100}},
		{a: Announcement{Region: "us", TURN: []string{"turn:b:3478"}, Active: 10, Max: 100}},
		{a: Announcement{Region: "eu", TURN: []string{"turn:c:3478"}, Active: 20, Max: 100}},
	}
	for i, r := range regs {
		r.SetSelf(states[i].get)
	}
	a := regs[0]
	waitFor(t, "three nodes", func() bool { return len(a.Nodes()) == 3 })
	if got := names(a.Steer(2, "")); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("least loaded: %v, want [b c]", got)
	}
	if got := names(a.Steer(2, "eu")); !slices.Equal(got, []string{"c", "a"}) {
		t.Errorf("own region first: %v, want [c a]", got)
	}
	if got := a.Steer(1, ""); len(got) != 1 || got[0].TURN[0] != "turn:b:3478" {
		t.Errorf("one node: %+v", got)
	}
	states[1].set(func(x *Announcement) { x.Draining = true })
	start := time.Now()
	regs[1].Announce()
	waitFor(t, "b out of the answers", func() bool { return !slices.Contains(names(a.Steer(3, "")), "b") })
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("draining node left the answers after %v", d)
	}
	// c dies without a word: gone within the TTL.
	regs[2].cancel()
	regs[2].done.Wait()
	start = time.Now()
	waitFor(t, "c gone", func() bool { return !slices.Contains(names(a.Nodes()), "c") })
	if d := time.Since(start); d > ttl+time.Second {
		t.Errorf("dead node listed %v after it stopped; TTL %v", d, ttl)
	}
	if got := names(a.Steer(2, "")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after drain and death: %v, want [a]", got)
	}
}

// Two running nodes given one name: the second says so once, in an error line.
func TestClusterDuplicateNodeName(t *testing.T) {
	s := startRedis(t)
	first := node(t, s, "same", 900*time.Millisecond)
	waitFor(t, "the first node's name claim", func() bool {
		c := redis.NewClient(&redis.Options{Addr: s.addr})
		defer c.Close()
		return c.Exists(context.Background(), "test:nodename:same").Val() == 1
	})
	var logs strings.Builder
	var mu sync.Mutex
	second := nodeLog(t, s, "same", 900*time.Millisecond, slogTo(&logs, &mu))
	for range 3 {
		second.announceOnce()
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if strings.Count(out, "another running node uses this node's name") != 1 {
		t.Errorf("want one error line, got:\n%s", out)
	}
	_ = first
}
