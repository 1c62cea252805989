package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/signaling"
)

// Redis key layout. Every key starts with prefix, so that a test (or two fleets) can
// share one Redis database.
const (
	keyID      = "id:"    // id -> "node\x00sha256(token)", with the lease's TTL
	keyQueue   = "q:"     // id -> list of held messages, oldest first
	keyQBytes  = "qb:"    // id -> bytes held for it
	keySrc     = "qs:"    // source key -> bytes held from it
	keyTotal   = "qbytes" // bytes held in total
	keyQIndex  = "qidx"   // sorted set: ids with held messages, scored by the oldest one's time
	keyChannel = "node:"  // node -> pub/sub channel of messages for its peers
)

// Options configures a Registry.
type Options struct {
	Client *redis.Client
	Node   string           // this node's name, unique in the fleet
	Region string           // its region label, "" for none (shown in metrics)
	Limits signaling.Limits // Peers is per node; the queue caps are fleet-wide
	Prefix string           // key prefix; "" = "relay:"
	// LeaseTTL is how long an id stays claimed after its node stops refreshing it;
	// 0 = 6 s. Leases are refreshed every LeaseTTL/3.
	LeaseTTL time.Duration
	// OpTimeout bounds every Redis call, so a dead backend fails fast; 0 = 1 s.
	OpTimeout time.Duration
	Logger    *slog.Logger
}

// Registry is a signaling.Registry over Redis.
type Registry struct {
	rdb     *redis.Client
	node    string
	region  atomic.Pointer[string] // shown in metrics; a reload may change it
	prefix  string
	lim     atomic.Pointer[signaling.Limits] // a reload may change them
	ttl     time.Duration
	timeout time.Duration
	log     *slog.Logger

	// regMu serialises Register per id (striped): the local check and the Redis claim
	// are one step, while registrations of different ids run side by side.
	regMu [64]sync.Mutex
	mu    sync.Mutex
	local map[string]entry

	up      atomic.Bool // the backend answered the last call
	sub     *redis.PubSub
	cancel  context.CancelFunc
	done    sync.WaitGroup
	closeMu sync.Once

	kick      chan struct{} // wakes the announcer
	instance  string        // random per process: tells two nodes given one name apart
	dupLogged atomic.Bool
	selfMu    sync.Mutex
	self      func() Announcement
	ownersMu  sync.Mutex
	owners    map[string]ownerEntry // id -> node holding it, as last read
	nodesMu   sync.Mutex
	nodes     []Announcement // the fleet as last read
	out       outbox         // messages for other nodes, sent by publisher
	// The refresher's buffers, reused every round (only its goroutine uses them).
	refreshHeld []held
	refreshBuf  []byte

	// Counters for metrics and tests.
	CrossNodeSent, CrossNodeReceived, BackendErrors atomic.Int64
}

// entry is a peer on this node. Held by value with the token's hash as an array: two
// allocations fewer per idle peer than a pointer and a hex string.
type entry struct {
	tokenHash sum
	peer      signaling.Peer
}

type sum [16]byte

// hex is how a token's hash appears in Redis.
func (s sum) hex() string { return hex.EncodeToString(s[:]) }

var _ signaling.Registry = (*Registry)(nil)

// New returns a Registry for this node and starts its lease refresher and its
// subscription; Close stops them. It does not fail when Redis is down: the node runs
// alone until the backend answers.
func New(o Options) (*Registry, error) {
	if o.Client == nil || o.Node == "" {
		return nil, errors.New("cluster: Options needs Client and Node")
	}
	if o.Prefix == "" {
		o.Prefix = "relay:"
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 6 * time.Second
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r := &Registry{rdb: o.Client, node: o.Node, prefix: o.Prefix, ttl: o.LeaseTTL,
		timeout: o.OpTimeout, log: o.Logger, local: make(map[string]entry), owners: make(map[string]ownerEntry), kick: make(chan struct{}, 1), out: newOutbox()}
	// go-redis logs every failed dial on its own (many lines a second while Redis is
	// down); note logs the outage once instead.
	silenceOnce.Do(func() { redis.SetLogger(quiet{}) })
	r.lim.Store(&o.Limits)
	r.SetRegion(o.Region)
	var inst [8]byte
	_, _ = rand.Read(inst[:])
	r.instance = hex.EncodeToString(inst[:])
	r.up.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.sub = r.rdb.Subscribe(ctx, r.prefix+keyChannel+r.node)
	r.done.Add(4)
	go r.receive(ctx)
	go r.publisher(ctx)
	go r.refresh(ctx)
	go r.announce(ctx)
	return r, nil
}

// Close stops the refresher and the subscription and gives up this node's leases
// (best effort: a dead backend lets them expire). It does not close the client.
func (r *Registry) Close() {
	r.closeMu.Do(func() {
		r.cancel()
		_ = r.sub.Close()
		r.done.Wait()
		if bs := r.out.take(); len(bs) > 0 && r.up.Load() {
			r.flush(bs) // what peers sent just before: one last round trip, best effort
		}
		r.mu.Lock()
		ids := make([]string, 0, len(r.local))
		mine := make([]string, 0, len(r.local))
		for id, e := range r.local {
			ids = append(ids, id)
			mine = append(mine, r.node+"\x00"+e.tokenHash.hex())
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		pipe := r.rdb.Pipeline()
		for i, id := range ids {
			pipe.Eval(ctx, scriptRelease, []string{r.prefix + keyID + id}, mine[i])
		}
		// A node that stops leaves the fleet's ICE answers at once, not after the TTL.
		pipe.Del(ctx, r.prefix+keyNodeInfo+r.node)
		pipe.ZRem(ctx, r.prefix+keyNodeSet, r.node)
		pipe.Eval(ctx, scriptRelease, []string{r.prefix + keyNodeClaim + r.node}, r.instance)
		_, _ = pipe.Exec(ctx)
	})
}

var silenceOnce sync.Once

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// SetLimits changes the limits for registrations and queueing from now on (a reload of
// [signal]); what is held already stays until drained or expired.
func (r *Registry) SetLimits(l signaling.Limits) { r.lim.Store(&l) }

// SetRegion changes the region this node's metrics name (a reload of [cluster] region;
// what the node announces comes from its SetSelf function).
func (r *Registry) SetRegion(region string) { r.region.Store(&region) }

// BackendUp reports whether the last Redis call succeeded.
func (r *Registry) BackendUp() bool { return r.up.Load() }

// note records the outcome of a Redis call: the first failure after success is
// logged, and the first success after failure, never one line per message.
func (r *Registry) note(err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		if !r.up.Swap(true) {
			r.log.Info("cluster backend reachable again; re-registering this node's peers", "node", r.node)
		}
		return
	}
	r.BackendErrors.Add(1)
	if r.up.Swap(false) {
		// go-redis errors name the address, never the password.
		r.log.Warn("cluster backend unreachable: peers on this node keep talking, cross-node messages get EXPIRE until it is back",
			"node", r.node, "err", err)
	}
}

// errDown stands for a call not made: while the backend is down (the last call failed)
// the per-message paths do not wait on Redis at all, so a black-holed Redis cannot hold
// up peers; the refresher and the announcer keep trying it every few hundred
// milliseconds and bring the node back.
var errDown = errors.New("cluster: backend down")

// stripe picks id's Register lock (FNV-1a).
func stripe(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % 64)
}

func (r *Registry) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.timeout)
}

func hashToken(t string) sum {
	h := sha256.Sum256([]byte(t))
	return sum(h[:16])
}

// scriptClaim claims KEYS[1] for ARGV[1] ("node\0tokenhash") for ARGV[3] ms: "N" if it
// was free, "R<node>" if the same token held it (on <node>), "T" if another token does.
const scriptClaim = `
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '\0', 1, true)
  if string.sub(v, sep + 1) ~= ARGV[2] then return 'T' end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 'R' .. string.sub(v, 1, sep - 1)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 'N'`

// scriptRefresh extends the leases this node holds, claims again those that are gone
// (as after a Redis restart), and returns the positions (from 1) of those someone else
// holds now. ARGV: the TTL (ms), the id key prefix, "node\0", and the leases packed as
// "<len(id)>:<id><token hash, 32 hex digits>" each: one string built in a reused buffer,
// so a refresh makes almost no garbage (a key, a value and an argument per lease made
// 255 bytes each, every 2 s, and an idle node's heap rose to its GC goal from that
// alone). The keys are built in the script: a fleet's Redis is one instance, not a
// Redis Cluster.
var scriptRefresh = redis.NewScript(`
local ttl, prefix, pre, s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out, pos, i = {}, 1, 0
while pos <= #s do
  local colon = string.find(s, ':', pos, true)
  local n = tonumber(string.sub(s, pos, colon - 1))
  local k = prefix .. string.sub(s, colon + 1, colon + n)
  local want = pre .. string.sub(s, colon + n + 1, colon + n + 32)
  pos = colon + n + 33
  i = i + 1
  local v = redis.call('GET', k)
  if v == want then redis.call('PEXPIRE', k, ttl)
  elseif not v then redis.call('SET', k, want, 'PX', ttl)
  else out[#out + 1] = i end
end
return out`)

// scriptRelease frees a lease if this node still holds it.
const scriptRelease = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

func (r *Registry) Register(id, token string, p signaling.Peer) (signaling.Peer, error) {
	th := hashToken(token)
	mu := &r.regMu[stripe(id)]
	mu.Lock()
	defer mu.Unlock()
	r.mu.Lock()
	cur, had := r.local[id]
	switch {
	case had && cur.tokenHash != th:
		r.mu.Unlock()
		return nil, signaling.ErrIDTaken
	case !had && len(r.local) >= r.lim.Load().Peers:
		r.mu.Unlock()
		return nil, signaling.ErrFull
	}
	r.mu.Unlock()

	res, err := "", errDown
	if r.up.Load() {
		ctx, cancel := r.ctx()
		res, err = r.rdb.Eval(ctx, scriptClaim, []string{r.prefix + keyID + id}, r.node+"\x00"+th.hex(), th.hex(), r.ttl.Milliseconds()).Text()
		cancel()
		r.note(err)
	}
	switch {
	case err != nil:
		// Backend down: the id is this node's for now; the refresher claims it when Redis
		// is back, and closes the peer if someone else got it meanwhile.
	case res == "T":
		return nil, signaling.ErrIDTaken
	case strings.HasPrefix(res, "R") && res[1:] != r.node:
		r.post(res[1:], 'k', id, []byte(th.hex()), netip.Addr{}) // the same token moved here: its old node closes it
	}
	r.mu.Lock()
	r.local[id] = entry{tokenHash: th, peer: p}
	r.mu.Unlock()
	if had {
		return cur.peer, nil
	}
	return nil, nil
}

func (r *Registry) Unregister(id string, p signaling.Peer) bool {
	r.mu.Lock()
	e, ok := r.local[id]
	if !ok || e.peer != p {
		r.mu.Unlock()
		return false
	}
	delete(r.local, id)
	r.mu.Unlock()
	if !r.up.Load() {
		return true // the lease expires by itself
	}
	ctx, cancel := r.ctx()
	err := r.rdb.Eval(ctx, scriptRelease, []string{r.prefix + keyID + id}, r.node+"\x00"+e.tokenHash.hex()).Err()
	cancel()
	r.note(err) // on failure the lease expires by itself
	return true
}

// Lookup returns the local peer holding id, or a stand-in that forwards to the node
// holding it, or nil.
func (r *Registry) Lookup(id string) signaling.Peer {
	r.mu.Lock()
	e, ok := r.local[id]
	r.mu.Unlock()
	if ok {
		return e.peer
	}
	if !r.up.Load() {
		return nil
	}
	if node, ok := r.cached(id); ok {
		return &remotePeer{r: r, node: node, id: id}
	}
	node := r.owner(id)
	if node == "" || node == r.node { // absent, or left here a moment ago
		return nil
	}
	r.remember(id, node)
	return &remotePeer{r: r, node: node, id: id}
}

// owner is the node holding id's lease, "" if none (or Redis could not say).
func (r *Registry) owner(id string) string {
	ctx, cancel := r.ctx()
	v, err := r.rdb.Get(ctx, r.prefix+keyID+id).Result()
	cancel()
	r.note(err)
	if err != nil {
		return ""
	}
	node, _, _ := strings.Cut(v, "\x00")
	return node
}

// The owner cache spares a Redis round trip per message during a call: a lookup on a
// poller waits, and every peer of that poller with it. A stale entry (the peer left or
// moved) costs nothing but a hop: the node it points at forwards the message to the
// id's node now, or holds it as for an absent id; a node that is gone received nothing,
// and the message is held for the id (flush). So entries may live long.
const (
	ownerTTL      = 30 * time.Second
	ownerCacheMax = 1 << 16 // entries; past it the cache starts over
)

type ownerEntry struct {
	node  string
	until time.Time
}

func (r *Registry) cached(id string) (string, bool) {
	r.ownersMu.Lock()
	defer r.ownersMu.Unlock()
	e, ok := r.owners[id]
	if !ok || time.Now().After(e.until) {
		return "", false
	}
	return e.node, true
}

func (r *Registry) remember(id, node string) {
	r.ownersMu.Lock()
	defer r.ownersMu.Unlock()
	if len(r.owners) >= ownerCacheMax {
		clear(r.owners)
	}
	r.owners[id] = ownerEntry{node, time.Now().Add(ownerTTL)}
}

func (r *Registry) forget(id string) {
	r.ownersMu.Lock()
	delete(r.owners, id)
	r.ownersMu.Unlock()
}

func (r *Registry) Taken(id string) bool {
	r.mu.Lock()
	_, ok := r.local[id]
	r.mu.Unlock()
	if ok || !r.up.Load() {
		return ok
	}
	ctx, cancel := r.ctx()
	n, err := r.rdb.Exists(ctx, r.prefix+keyID+id).Result()
	cancel()
	r.note(err)
	return err == nil && n > 0
}

// IDs lists the ids registered on this node (discovery stays per node).
func (r *Registry) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Keys(r.local))
}

// remotePeer is a peer on another node: Send posts to the outbox for that node.
type remotePeer struct {
	r        *Registry
	node, id string
}

var _ signaling.SourcedSender = (*remotePeer)(nil)

// Send is false when the outbox is full or Redis is down: the sender is told the peer
// left. A message accepted here that finds no node at the other end is held for id
// (see flush).
func (p *remotePeer) Send(b []byte) bool { return p.SendFrom(b, netip.Addr{}) }

// SendFrom is Send counting b against the sender's address's share of the outbox.
func (p *remotePeer) SendFrom(b []byte, from netip.Addr) bool {
	if p.r.post(p.node, 'm', p.id, b, from.Unmap()) {
		return true
	}
	p.r.forget(p.id)
	return false
}

// Close does nothing: a slow peer on another node is that node's to drop.
func (p *remotePeer) Close() {}

// receive delivers what other nodes publish for this node's peers.
func (r *Registry) receive(ctx context.Context) {
	defer r.done.Done()
	ch := r.sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if len(m.Payload) > 0 && m.Payload[0] == kindBatch {
				eachFrame(m.Payload[1:], r.deliver)
			}
		}
	}
}

func (r *Registry) deliver(kind byte, id, body string) {
	r.mu.Lock()
	e, ok := r.local[id]
	r.mu.Unlock()
	switch kind {
	case 'k': // the same token registered id on another node
		if ok && e.tokenHash.hex() == body {
			e.peer.Close()
		}
	case 'm', 'f':
		r.CrossNodeReceived.Add(1)
		if !ok {
			// The sender's node thought id was here (its owner cache, or the peer left a
			// moment ago). If it is on another node now, forward once ('f' is never
			// forwarded again, so a race cannot loop); else hold it as for an absent id.
			if kind == 'm' {
				if node := r.owner(id); node != "" && node != r.node && r.post(node, 'f', id, []byte(body), netip.Addr{}) {
					return
				}
			}
			q := signaling.Queued{Dst: id, Data: []byte(body), At: time.Now()}
			q.Src = srcOf(q.Data)
			r.Enqueue(q)
			return
		}
		if !e.peer.Send([]byte(body)) {
			// Too far behind: dropped as the server drops a slow local peer, and the
			// sender, wherever it is, is told the peer left, as a local sender would be.
			e.peer.Close()
			if src := srcOf([]byte(body)); src != "" {
				if p := r.Lookup(src); p != nil {
					p.Send(leave(id, src))
				}
			}
		}
	}
}

// leave is the LEAVE a sender gets for a peer dropped on the way.
func leave(src, dst string) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Src  string `json:"src"`
		Dst  string `json:"dst"`
	}{"LEAVE", src, dst})
	return b
}

// srcOf reads the src of an encoded outbound message, so that a message held after
// crossing nodes can still be expired back to its sender.
func srcOf(b []byte) string {
	var m struct {
		Src string `json:"src"`
	}
	_ = json.Unmarshal(b, &m)
	return m.Src
}

// refresh extends this node's leases every LeaseTTL/3; when Redis lost them (a
// restart) it claims them again, and a peer whose id someone else holds now is closed.
func (r *Registry) refresh(ctx context.Context) {
	defer r.done.Done()
	every(ctx, r.ttl/3, r.refreshOnce)
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (r *Registry) refreshOnce() {
	r.mu.Lock()
	all := r.refreshHeld[:0]
	for id, e := range r.local {
		all = append(all, held{id, e})
	}
	r.mu.Unlock()
	defer func() {
		clear(all) // keep the buffer, not the peers
		r.refreshHeld = all[:0]
	}()
	if len(all) == 0 {
		ctx, cancel := r.ctx()
		r.note(r.rdb.Ping(ctx).Err())
		cancel()
		return
	}
	const batch = 500
	for start := 0; start < len(all); start += batch {
		part := all[start:min(start+batch, len(all))]
		buf := r.refreshBuf[:0]
		for _, h := range part {
			buf = strconv.AppendInt(buf, int64(len(h.id)), 10)
			buf = append(buf, ':')
			buf = append(buf, h.id...)
			buf = hex.AppendEncode(buf, h.e.tokenHash[:])
		}
		r.refreshBuf = buf
		ctx, cancel := r.ctx()
		lost, err := scriptRefresh.Run(ctx, r.rdb, nil, r.ttl.Milliseconds(), r.prefix+keyID, r.node+"\x00", buf).Int64Slice()
		cancel()
		r.note(err)
		if err != nil {
			return
		}
		for _, i := range lost {
			if i < 1 || int(i) > len(part) {
				continue
			}
			h := part[i-1]
			r.mu.Lock()
			still := r.local[h.id].peer == h.e.peer
			r.mu.Unlock()
			if still {
				r.log.Info("cluster: id taken over elsewhere while this node could not reach the backend; closing its peer here",
					"node", r.node, "id", h.id)
				h.e.peer.Close()
			}
		}
	}
}

// held is a lease as the refresher reads it.
type held struct {
	id string
	e  entry
}

// Queued messages. An entry is "<at ms> <cost> <source key> <len(src)> " then src, then
// the message; the scripts read only the header.

// queueOverhead matches the in-memory registry's bookkeeping charge per held message,
// so that the byte caps mean the same on one node and in a fleet.
const queueOverhead = 192

func cost(q *signaling.Queued) int { return len(q.Data) + len(q.Dst) + queueOverhead }

// sourceKey is the budget a sender's address counts against, as on one node: the
// address, or for IPv6 its /64.
func sourceKey(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr().String()
	}
	return a.String()
}

// scriptEnqueue: KEYS = queue, its byte count, the source's byte count, the total, the
// index; ARGV = entry, cost, at, dst, and the caps: per id messages, per id bytes, per
// source bytes, total bytes. 1 if held, 0 if a cap said no.
const scriptEnqueue = `
local n = tonumber(ARGV[2])
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') + n > tonumber(ARGV[6]) then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') + n > tonumber(ARGV[7]) then return 0 end
if tonumber(redis.call('GET', KEYS[4]) or '0') + n > tonumber(ARGV[8]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], n)
redis.call('INCRBY', KEYS[3], n)
redis.call('INCRBY', KEYS[4], n)
redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[4])
return 1`

// unholdLua takes one entry e off the byte counts (KEYS[2] per id, KEYS[4] total; the
// source key is built from prefix ARGV[1]).
const unholdLua = `
local function unhold(e)
  local at, c, src = string.match(e, '^(%d+) (%d+) (%S+) ')
  c = tonumber(c)
  redis.call('DECRBY', KEYS[2], c)
  redis.call('DECRBY', KEYS[4], c)
  local sk = ARGV[1] .. src
  if redis.call('DECRBY', sk, c) <= 0 then redis.call('DEL', sk) end
  return tonumber(at)
end
`

// scriptDrain: KEYS = queue, its byte count, the index, the total; ARGV = source key
// prefix, dst. Returns the entries, oldest first, and forgets them.
const scriptDrain = unholdLua + `
local all = redis.call('LRANGE', KEYS[1], 0, -1)
for _, e in ipairs(all) do unhold(e) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return all`

// scriptExpire: as scriptDrain, for entries older than ARGV[3] (ms) only.
const scriptExpire = unholdLua + `
local out = {}
while true do
  local e = redis.call('LINDEX', KEYS[1], 0)
  if not e then break end
  local at = tonumber(string.match(e, '^(%d+) '))
  if at >= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[3], at, ARGV[2])
    return out
  end
  redis.call('LPOP', KEYS[1])
  unhold(e)
  out[#out + 1] = e
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return out`

func (r *Registry) queueKeys(dst string) []string {
	return []string{r.prefix + keyQueue + dst, r.prefix + keyQBytes + dst, r.prefix + keyQIndex, r.prefix + keyTotal}
}

// Enqueue holds q fleet-wide. When Redis cannot be reached the message cannot be held
// anywhere useful: its sender, if on this node, gets EXPIRE at once rather than silence.
func (r *Registry) Enqueue(q signaling.Queued) bool {
	if !r.up.Load() {
		r.expireNow(q.Src, q.Dst)
		return false
	}
	n := cost(&q)
	src := sourceKey(q.From)
	lim := r.lim.Load()
	entry := fmt.Sprintf("%d %d %s %d ", q.At.UnixMilli(), n, src, len(q.Src)) + q.Src + string(q.Data)
	ctx, cancel := r.ctx()
	held, err := r.rdb.Eval(ctx, scriptEnqueue,
		[]string{r.prefix + keyQueue + q.Dst, r.prefix + keyQBytes + q.Dst, r.prefix + keySrc + src, r.prefix + keyTotal, r.prefix + keyQIndex},
		entry, n, q.At.UnixMilli(), q.Dst, lim.QueuePerID, lim.BytesPerPeer, lim.BytesPerIP, lim.QueueBytes).Int()
	cancel()
	r.note(err)
	if err != nil {
		r.expireNow(q.Src, q.Dst)
		return false
	}
	return held == 1
}

// expireNow tells a sender on this node that dst cannot be reached.
func (r *Registry) expireNow(src, dst string) {
	r.mu.Lock()
	e, ok := r.local[src]
	r.mu.Unlock()
	if !ok {
		return
	}
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Src  string `json:"src,omitempty"`
		Dst  string `json:"dst,omitempty"`
	}{"EXPIRE", dst, src})
	e.peer.Send(b)
}

func (r *Registry) Drain(id string) []signaling.Queued {
	if !r.up.Load() {
		return nil
	}
	k := r.queueKeys(id)
	ctx, cancel := r.ctx()
	res, err := r.rdb.Eval(ctx, scriptDrain, []string{k[0], k[1], k[2], k[3]}, r.prefix+keySrc, id).StringSlice()
	cancel()
	r.note(err)
	return parseEntries(id, res)
}

func (r *Registry) Expire(cutoff time.Time) []signaling.Queued {
	if !r.up.Load() {
		return nil
	}
	ctx, cancel := r.ctx()
	defer cancel()
	ids, err := r.rdb.ZRangeByScore(ctx, r.prefix+keyQIndex, &redis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(cutoff.UnixMilli(), 10)}).Result()
	r.note(err)
	var out []signaling.Queued
	for _, id := range ids {
		k := r.queueKeys(id)
		res, err := r.rdb.Eval(ctx, scriptExpire, []string{k[0], k[1], k[2], k[3]}, r.prefix+keySrc, id, cutoff.UnixMilli()).StringSlice()
		r.note(err)
		if err != nil {
			break
		}
		out = append(out, parseEntries(id, res)...)
	}
	return out
}

func parseEntries(dst string, raw []string) []signaling.Queued {
	if len(raw) == 0 {
		return nil
	}
	out := make([]signaling.Queued, 0, len(raw))
	for _, e := range raw {
		f := strings.SplitN(e, " ", 5)
		if len(f) < 5 {
			continue
		}
		at, _ := strconv.ParseInt(f[0], 10, 64)
		sl, err := strconv.Atoi(f[3])
		if err != nil || sl > len(f[4]) {
			continue
		}
		q := signaling.Queued{Src: f[4][:sl], Dst: dst, Data: []byte(f[4][sl:]), At: time.UnixMilli(at)}
		if a, err := netip.ParseAddr(f[2]); err == nil {
			q.From = a
		}
		out = append(out, q)
	}
	return out
}
