package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/config"
)

// The operator's state shared by a fleet (admin.Store): revocations and today's byte
// usage per user id. Every node holds the revocations in memory (the TURN server checks
// them per request) and keeps them in step: a change is one Lua script that stores it,
// bumps a version and publishes it on one channel; a node applies changes in version
// order, and reads everything again when it sees a gap (a message lost while its
// subscription reconnected) or, polling the version every statePoll, a change it never
// got. Usage is a hash per UTC day that every node adds its counts to each second.
const (
	keyRev      = "admin:rev"         // hash: revocation key -> JSON
	keyRevUntil = "admin:revuntil"    // sorted set: revocation key, scored by when it lapses (unix ms)
	keyRevVer   = "admin:revver"      // version of the revocations: bumped by every change
	keyRevChan  = "admin:revocations" // pub/sub: "<version> put <json>" or "<version> del <key>"
	keyUsage    = "admin:usage:"      // + "2006-01-02": hash user id -> bytes relayed that day

	statePoll = 500 * time.Millisecond
	usageTTL  = 72 * time.Hour // a day's usage outlives the day by enough for any clock skew
)

// StateStore is admin.Store over Redis.
type StateStore struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	version int64          // of the last change applied
	own     map[int64]bool // versions of this node's own changes, not applied yet from the channel
	watch   func(admin.Change)

	sub    *redis.PubSub
	cancel context.CancelFunc
	done   sync.WaitGroup
	once   sync.Once
}

var _ admin.Store = (*StateStore)(nil)

// OpenStateStore connects to [cluster] redis for the operator's state. Like Open, it
// does not wait for Redis. Close closes the client too.
func OpenStateStore(c *config.Cluster, log *slog.Logger) (*StateStore, error) {
	rdb, err := newClient(c)
	if err != nil {
		return nil, err
	}
	return NewStateStore(rdb, "", log), nil
}

// NewStateStore is a StateStore on rdb with keys under prefix ("" = "relay:"); it
// closes rdb on Close.
func NewStateStore(rdb *redis.Client, prefix string, log *slog.Logger) *StateStore {
	if prefix == "" {
		prefix = "relay:"
	}
	if log == nil {
		log = slog.Default()
	}
	silenceOnce.Do(func() { redis.SetLogger(quiet{}) })
	return &StateStore{rdb: rdb, prefix: prefix, timeout: time.Second, log: log, own: map[int64]bool{}}
}

// scriptPut stores a revocation unless ARGV[4] are held already (-1), bumps the version
// and publishes the change. KEYS: rev, revuntil, revver. ARGV: key, json, until ms, max,
// channel.
var scriptPut = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[5], v .. ' put ' .. ARGV[2])
return v`)

// scriptDelete lifts a revocation: 0 if there was none, else the new version.
// KEYS: rev, revuntil, revver. ARGV: key, channel.
var scriptDelete = redis.NewScript(`
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], v .. ' del ' .. ARGV[1])
return v`)

// scriptPrune forgets revocations that lapsed before ARGV[1] (unix ms). Every node
// drops them from memory by the same clock, so the version does not move.
var scriptPrune = redis.NewScript(`
local ks = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, k in ipairs(ks) do redis.call('HDEL', KEYS[1], k) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
return #ks`)

// scriptLoad returns the version and every revocation, in one step.
var scriptLoad = redis.NewScript(`
return {redis.call('GET', KEYS[2]) or '0', redis.call('HVALS', KEYS[1])}`)

func (s *StateStore) keys() []string {
	return []string{s.prefix + keyRev, s.prefix + keyRevUntil, s.prefix + keyRevVer}
}

func (s *StateStore) Revocations(ctx context.Context) ([]admin.Revocation, error) {
	res, err := scriptLoad.Run(ctx, s.rdb, []string{s.prefix + keyRev, s.prefix + keyRevVer}).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != 2 {
		return nil, errors.New("cluster: unexpected answer reading revocations")
	}
	ver, _ := strconv.ParseInt(toString(res[0]), 10, 64)
	vals, _ := res[1].([]any)
	out := make([]admin.Revocation, 0, len(vals))
	for _, v := range vals {
		var r admin.Revocation
		if json.Unmarshal([]byte(toString(v)), &r) == nil {
			out = append(out, r)
		}
	}
	s.mu.Lock()
	s.version = ver
	clear(s.own)
	s.mu.Unlock()
	return out, nil
}

func toString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case []byte:
		return string(t)
	case int64:
		return strconv.FormatInt(t, 10)
	}
	return ""
}

func (s *StateStore) PutRevocation(ctx context.Context, r admin.Revocation, max int) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	v, err := scriptPut.Run(ctx, s.rdb, s.keys(), r.Key(), b, r.Until.UnixMilli(), max, s.prefix+keyRevChan).Int64()
	if err != nil {
		return err
	}
	if v < 0 {
		return admin.ErrFull
	}
	s.ownChange(v)
	return nil
}

func (s *StateStore) DeleteRevocation(ctx context.Context, key string) (bool, error) {
	v, err := scriptDelete.Run(ctx, s.rdb, s.keys(), key, s.prefix+keyRevChan).Int64()
	if err != nil || v == 0 {
		return false, err
	}
	s.ownChange(v)
	return true, nil
}

// ownChange notes a change this node made (and applied already) at version v, so that
// its echo from the channel is not applied twice.
func (s *StateStore) ownChange(v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == s.version+1 {
		s.version = v
	} else if v > s.version && len(s.own) < 1024 {
		s.own[v] = true
	}
}

func (s *StateStore) PruneRevocations(ctx context.Context, now time.Time) error {
	return scriptPrune.Run(ctx, s.rdb, s.keys(), now.UnixMilli()).Err()
}

// Watch subscribes to the fleet's changes and polls the version, until Close.
func (s *StateStore) Watch(f func(admin.Change)) {
	ctx, cancel := context.WithCancel(context.Background())
	sub := s.rdb.Subscribe(ctx, s.prefix+keyRevChan)
	s.mu.Lock()
	s.watch, s.cancel, s.sub = f, cancel, sub
	s.mu.Unlock()
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		// The channel closes with the subscription (Close).
		for m := range sub.Channel(redis.WithChannelSize(256)) {
			s.received(m.Payload)
		}
	}()
	go func() {
		defer s.done.Done()
		every(ctx, statePoll, func() { s.poll(ctx) })
	}()
}

// received applies one message of the channel.
func (s *StateStore) received(payload string) {
	vs, rest, _ := strings.Cut(payload, " ")
	op, arg, _ := strings.Cut(rest, " ")
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return
	}
	var c admin.Change
	switch op {
	case "put":
		var r admin.Revocation
		if json.Unmarshal([]byte(arg), &r) != nil {
			return
		}
		c.Put = &r
	case "del":
		c.Delete = arg
	default:
		return
	}
	s.mu.Lock()
	switch {
	case v <= s.version:
		s.mu.Unlock()
		return // applied already (read with everything, or our own)
	case v == s.version+1:
		s.version = v
		if s.own[v] {
			delete(s.own, v)
			s.mu.Unlock()
			return
		}
	default:
		c = admin.Change{Reload: true} // a gap: something was missed
	}
	f := s.watch
	s.mu.Unlock()
	f(c)
}

// poll reads everything again when the version moved past the last change applied
// (a message the subscription missed).
func (s *StateStore) poll(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := s.rdb.Get(cctx, s.prefix+keyRevVer).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return // the outage is the usage sync's to report
	}
	s.mu.Lock()
	behind := v > s.version
	f := s.watch
	s.mu.Unlock()
	if behind {
		f(admin.Change{Reload: true})
	}
}

func (s *StateStore) AddUsage(ctx context.Context, day string, add map[string]int64) (map[string]int64, error) {
	key := s.prefix + keyUsage + day
	pipe := s.rdb.Pipeline()
	cmds := make(map[string]*redis.IntCmd, len(add))
	for user, n := range add {
		cmds[user] = pipe.HIncrBy(ctx, key, user, n)
	}
	pipe.Expire(ctx, key, usageTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(cmds))
	for user, c := range cmds {
		out[user] = c.Val()
	}
	return out, nil
}

func (s *StateStore) Usage(ctx context.Context, day, user string) (int64, error) {
	n, err := s.rdb.HGet(ctx, s.prefix+keyUsage+day, user).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// Close stops watching and closes the client.
func (s *StateStore) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		cancel, sub := s.cancel, s.sub
		s.mu.Unlock()
		if cancel != nil {
			cancel()
			_ = sub.Close()
		}
		s.done.Wait()
	})
	return s.rdb.Close()
}
