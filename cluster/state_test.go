package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/relay"
)

// ender records the allocations a State ends, as the TURN server would.
type ender struct {
	mu     sync.Mutex
	allocs []relay.AllocationInfo
	ended  map[string]string
}

func (e *ender) EndAllocations(match func(*relay.AllocationInfo) bool, reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for i := range e.allocs {
		if _, gone := e.ended[e.allocs[i].ID]; !gone && match(&e.allocs[i]) {
			e.ended[e.allocs[i].ID] = reason
			n++
		}
	}
	return n
}

func (e *ender) reason(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ended[id]
}

// stateNode is one node's State over the test's Redis.
func stateNode(t *testing.T, s *redisServer, allocs ...relay.AllocationInfo) (*admin.State, *ender) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	st := admin.NewState(admin.Options{Store: NewStateStore(rdb, "test:", nil), MaxTTL: time.Hour, Budget: 10_000})
	e := &ender{allocs: allocs, ended: map[string]string{}}
	st.Attach(e)
	st.Start()
	t.Cleanup(func() { _ = st.Close() })
	waitFor(t, "the subscription", func() bool { return subscribed(t, s, "test:"+keyRevChan) })
	return st, e
}

func restCreds(user string) string {
	return fmt.Sprintf("%d:%s", time.Now().Add(time.Hour).Unix(), user)
}

// TestStateRevocationAcrossNodes: a revocation made on one node ends the allocation it
// covers on another within a second, and that node refuses the credentials; lifting it
// reaches the other node too.
func TestStateRevocationAcrossNodes(t *testing.T) {
	s := startRedis(t)
	n1, _ := stateNode(t, s)
	n2, e2 := stateNode(t, s, relay.AllocationInfo{ID: "on-n2", User: "alice", Username: restCreds("alice")})
	start := time.Now()
	if _, err := n1.Revoke("alice", "", admin.RevokedByAdmin, time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node 2 to end alice's allocation", func() bool { return e2.reason("on-n2") == relay.EndRevoked })
	if d := time.Since(start); d > time.Second {
		t.Errorf("node 2 ended it %v after the revocation, want within 1 s", d)
	}
	if !n2.Revoked(restCreds("alice"), "alice") {
		t.Error("node 2 does not refuse alice")
	}
	if found, err := n2.Unrevoke("alice"); err != nil || !found {
		t.Fatalf("lifting on node 2: %v %v", found, err)
	}
	waitFor(t, "node 1 to let alice in again", func() bool { return !n1.Revoked(restCreds("alice"), "alice") })
	if got := n1.Revocations(); len(got) != 0 {
		t.Errorf("node 1 still lists %+v", got)
	}
}

// TestStateMissedChange: a change whose message a node never got (here: written to
// Redis behind the nodes' backs) is read within the version poll.
func TestStateMissedChange(t *testing.T) {
	s := startRedis(t)
	n1, e1 := stateNode(t, s, relay.AllocationInfo{ID: "a", User: "bob", Username: restCreds("bob")})
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rdb.Close()
	ctx := context.Background()
	r := admin.Revocation{User: "bob", Until: time.Now().Add(time.Hour), Created: time.Now(), Reason: admin.RevokedByAdmin}
	b := fmt.Sprintf(`{"user":"bob","until":%q,"created":%q,"reason":"admin"}`, r.Until.Format(time.RFC3339Nano), r.Created.Format(time.RFC3339Nano))
	if err := rdb.HSet(ctx, "test:"+keyRev, r.Key(), b).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Incr(ctx, "test:"+keyRevVer).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "node 1 to read the missed revocation", func() bool { return e1.reason("a") == relay.EndRevoked })
	if d := time.Since(start); d > time.Second {
		t.Errorf("read %v after the change, want within a poll (%v)", d, statePoll)
	}
	if !n1.Revoked(restCreds("bob"), "bob") {
		t.Error("bob not refused")
	}
}

// TestStateUsageShared: every node's bytes count against one budget; a node learns the
// others' within a sync.
func TestStateUsageShared(t *testing.T) {
	s := startRedis(t)
	n1, _ := stateNode(t, s)
	n2, _ := stateNode(t, s)
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rdb.Close()
	u2 := n2.AcquireUsage("carol")
	defer n2.ReleaseUsage("carol")
	// Node 1 relayed 10,000 bytes for carol (the budget), as its sync stores them.
	day := time.Now().UTC().Format(time.DateOnly)
	if err := rdb.HIncrBy(context.Background(), "test:"+keyUsage+day, "carol", 10_000).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node 2 to learn carol's total", func() bool { return u2.Total() == 10_000 })
	if !n2.OverBudget("carol") {
		t.Error("carol is not over budget on node 2")
	}
	rep, err := n1.Usage("carol")
	if err != nil || len(rep.Users) != 1 || rep.Users[0].Bytes != 10_000 || !rep.Users[0].OverBudget {
		t.Errorf("node 1's usage of carol: %+v %v", rep, err)
	}
}

// TestStateRedisDown: a node starts with Redis down (TURN never waits for it):
// revoking fails with an error, and works once Redis is back, for every node.
func TestStateRedisDown(t *testing.T) {
	s := startRedis(t)
	s.stop()
	start := time.Now()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, DialTimeout: 100 * time.Millisecond,
		ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	n1 := admin.NewState(admin.Options{Store: NewStateStore(rdb, "test:", nil), MaxTTL: time.Hour})
	n1.Start()
	defer func() { _ = n1.Close() }()
	if d := time.Since(start); d > time.Second {
		t.Errorf("starting with Redis down took %v", d)
	}
	if _, err := n1.Revoke("dora", "", admin.RevokedByAdmin, time.Time{}); err == nil {
		t.Error("a revocation was accepted with Redis down")
	}
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
	n2, _ := stateNode(t, s)
	waitFor(t, "a revocation once Redis is back", func() bool {
		_, err := n1.Revoke("dora", "", admin.RevokedByAdmin, time.Time{})
		return err == nil
	})
	waitFor(t, "node 2 to refuse dora", func() bool { return n2.Revoked(restCreds("dora"), "dora") })
}
