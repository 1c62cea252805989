package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Node announcements: every node writes what it would put in an ICE answer, its load
// and whether it drains, under a key with the lease TTL, and lists the others', every
// announceEvery. A node that stops announcing is gone within the TTL; one that starts
// draining says so at once (Announce), and the others see it within announceEvery.
const (
	keyNodeInfo   = "nodeinfo:" // node -> its Announcement as JSON, with the lease TTL
	keyNodeSet    = "nodes"     // sorted set: node names scored by when their info expires (ms)
	keyNodeClaim  = "nodename:" // node -> the instance using that name, with the lease TTL
	announceEvery = 500 * time.Millisecond
)

// Announcement is what a node tells the fleet about itself.
type Announcement struct {
	Node     string   `json:"node"`
	Region   string   `json:"region,omitempty"`
	STUN     []string `json:"stun,omitempty"`
	TURN     []string `json:"turn,omitempty"`
	Active   int      `json:"active"` // allocations now
	Max      int      `json:"max"`    // [limits] total_allocations
	Draining bool     `json:"draining,omitempty"`
}

// load is the fraction of its allocations a node uses.
func (a *Announcement) load() float64 {
	if a.Max <= 0 {
		return 1
	}
	return float64(a.Active) / float64(a.Max)
}

// SetSelf gives the Registry what this node announces; self is called at every
// announcement. Before SetSelf the node announces nothing (it still routes messages).
func (r *Registry) SetSelf(self func() Announcement) {
	r.selfMu.Lock()
	r.self = self
	r.selfMu.Unlock()
	r.wake()
}

// Announce makes the node announce itself now, e.g. when it starts draining.
func (r *Registry) Announce() { r.wake() }

func (r *Registry) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// announce loops: write this node's announcement, read everyone's.
func (r *Registry) announce(ctx context.Context) {
	defer r.done.Done()
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		r.announceOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// scriptNodeClaim holds a node name for one process (ARGV[1], random per start): 0 when
// another process holds it, i.e. two nodes were given the same name.
const scriptNodeClaim = `
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`

func (r *Registry) announceOnce() {
	r.selfMu.Lock()
	self := r.self
	r.selfMu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	now := time.Now()
	mine, err := r.rdb.Eval(ctx, scriptNodeClaim, []string{r.prefix + keyNodeClaim + r.node}, r.instance, r.ttl.Milliseconds()).Int()
	r.note(err)
	if err == nil && mine == 0 && r.dupLogged.CompareAndSwap(false, true) {
		// Two nodes of one name share a channel and each other's leases: messages and
		// ids go astray. Said once; the name is the operator's to fix.
		r.log.Error("cluster: another running node uses this node's name; give each node a unique [cluster] node", "node", r.node)
	}
	if self != nil {
		a := self()
		a.Node = r.node
		b, _ := json.Marshal(a)
		pipe := r.rdb.TxPipeline()
		pipe.Set(ctx, r.prefix+keyNodeInfo+r.node, b, r.ttl)
		pipe.ZAdd(ctx, r.prefix+keyNodeSet, redis.Z{Score: float64(now.Add(r.ttl).UnixMilli()), Member: r.node})
		pipe.ZRemRangeByScore(ctx, r.prefix+keyNodeSet, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
		_, err := pipe.Exec(ctx)
		r.note(err)
		if err != nil {
			r.setNodes(nil)
			return
		}
	}
	names, err := r.rdb.ZRangeByScore(ctx, r.prefix+keyNodeSet, &redis.ZRangeBy{Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	r.note(err)
	if err != nil || len(names) == 0 {
		r.setNodes(nil)
		return
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = r.prefix + keyNodeInfo + n
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	r.note(err)
	if err != nil {
		r.setNodes(nil)
		return
	}
	nodes := make([]Announcement, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between the two calls
		}
		var a Announcement
		if json.Unmarshal([]byte(s), &a) == nil && a.Node != "" {
			nodes = append(nodes, a)
		}
	}
	r.setNodes(nodes)
}

func (r *Registry) setNodes(n []Announcement) {
	r.nodesMu.Lock()
	r.nodes = n
	r.nodesMu.Unlock()
}

// Nodes is the fleet as last read (this node included once it announced); nil while
// Redis cannot be reached.
func (r *Registry) Nodes() []Announcement {
	r.nodesMu.Lock()
	defer r.nodesMu.Unlock()
	return slices.Clone(r.nodes)
}

// Steer picks up to n healthy, non-draining nodes for an ICE answer: those of region
// first when region is set, then the least loaded (active/maximum allocations), then
// by name so that equal nodes are picked in a stable order. Empty when no node is
// known (Redis down): the caller answers with its own URLs, as a single node does.
func (r *Registry) Steer(n int, region string) []Announcement {
	all := r.Nodes()
	out := all[:0]
	for _, a := range all {
		if !a.Draining {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b Announcement) int {
		if region != "" && (a.Region == region) != (b.Region == region) {
			if a.Region == region {
				return -1
			}
			return 1
		}
		if la, lb := a.load(), b.load(); la != lb {
			if la < lb {
				return -1
			}
			return 1
		}
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
