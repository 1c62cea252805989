package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTURN is the TURN server as the API and the State see it.
type fakeTURN struct {
	mu     sync.Mutex
	allocs []relay.AllocationInfo
	ended  map[string]string // id -> reason
}

func (f *fakeTURN) Allocations(user string) []relay.AllocationInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []relay.AllocationInfo
	for _, a := range f.allocs {
		if _, gone := f.ended[a.ID]; !gone && (user == "" || a.User == user) {
			out = append(out, a)
		}
	}
	return out
}

func (f *fakeTURN) EndAllocations(match func(*relay.AllocationInfo) bool, reason string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for i := range f.allocs {
		if _, gone := f.ended[f.allocs[i].ID]; !gone && match(&f.allocs[i]) {
			f.ended[f.allocs[i].ID] = reason
			n++
		}
	}
	return n
}

func (f *fakeTURN) EndAllocation(id, reason string) bool {
	return f.EndAllocations(func(a *relay.AllocationInfo) bool { return a.ID == id }, reason) > 0
}

func (f *fakeTURN) Gone(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, gone := f.ended[id]
	return gone
}

func (f *fakeTURN) reason(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended[id]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a movable time for the State.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func newTestState(t *testing.T, store Store, c *clock) (*State, *fakeTURN) {
	t.Helper()
	if c == nil {
		c = &clock{t: time.Now()}
	}
	s := NewState(Options{Store: store, MaxTTL: time.Hour, Logger: quiet(), Now: c.now})
	f := &fakeTURN{ended: map[string]string{}}
	s.Attach(f)
	t.Cleanup(func() { _ = s.Close() })
	return s, f
}

func creds(expiry time.Time, user string) string {
	return fmt.Sprintf("%d:%s", expiry.Unix(), user)
}

// TestRevocationsCover: the operator's user revocation covers every credential of the
// user, later ones too; a session's (bind_credentials) only those expiring by its end;
// a credential revocation only that credential. Live allocations they cover end.
func TestRevocationsCover(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}
	s, f := newTestState(t, nil, c)
	now := c.now()
	f.allocs = []relay.AllocationInfo{
		{ID: "a1", User: "alice", Username: creds(now.Add(time.Hour), "alice")},
		{ID: "b1", User: "bob", Username: creds(now.Add(time.Hour), "bob")},
		{ID: "b2", User: "bob", Username: creds(now.Add(2*time.Hour), "bob")},
		{ID: "p1", User: "peer-1", Username: creds(now.Add(time.Hour), "peer-1")},
		{ID: "p2", User: "peer-1", Username: creds(now.Add(3*time.Hour), "peer-1")},
	}
	r, err := s.Revoke("alice", "", RevokedByAdmin, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(time.Hour + 5*time.Second); !r.Until.Equal(want) {
		t.Errorf("until %v, want max_ttl from now: %v", r.Until, want)
	}
	if !s.Revoked(creds(now.Add(23*time.Hour), "alice"), "alice") || !s.Revoked("alice", "alice") {
		t.Error("the operator's revocation of alice does not cover a later credential, or the static user alice")
	}
	if _, err := s.Revoke("", creds(now.Add(time.Hour), "bob"), RevokedByAdmin, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !s.Revoked(creds(now.Add(time.Hour), "bob"), "bob") || s.Revoked(creds(now.Add(2*time.Hour), "bob"), "bob") {
		t.Error("a credential revocation must cover that credential only")
	}
	if _, err := s.Revoke("peer-1", "", RevokedSessionEnded, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !s.Revoked(creds(now.Add(time.Hour), "peer-1"), "peer-1") || s.Revoked(creds(now.Add(3*time.Hour), "peer-1"), "peer-1") {
		t.Error("a session's revocation covers the credentials expiring by its end, and no later ones")
	}
	for id, want := range map[string]string{"a1": relay.EndRevoked, "b1": relay.EndRevoked, "b2": "", "p1": relay.EndRevoked, "p2": ""} {
		if got := f.reason(id); got != want {
			t.Errorf("allocation %s: ended %q, want %q", id, got, want)
		}
	}
	if got := len(s.Revocations()); got != 3 {
		t.Errorf("%d revocations listed, want 3", got)
	}
	// They lapse by themselves.
	c.set(now.Add(2*time.Hour + time.Second))
	s.pruneRevocations()
	if s.Revoked("alice", "alice") || s.Revoked(creds(now.Add(time.Hour), "peer-1"), "peer-1") {
		t.Error("revocations did not lapse")
	}
	if got := s.Revocations(); len(got) != 0 {
		t.Errorf("left after lapsing: %+v", got)
	}
}

// TestRevokeValidation: what POST /v1/revocations refuses as a bad request.
func TestRevokeValidation(t *testing.T) {
	s, _ := newTestState(t, nil, nil)
	for _, tc := range []struct{ user, username string }{
		{"", ""},
		{"a", "1:a"},
		{"a:b", ""},
		{"bad\x00id", ""},
		{"", "alice"},
		{"", "123:"},
		{"", "-5:alice"},
	} {
		if _, err := s.Revoke(tc.user, tc.username, RevokedByAdmin, time.Time{}); !IsBadRequest(err) {
			t.Errorf("Revoke(%q, %q) = %v, want a bad request", tc.user, tc.username, err)
		}
	}
	// An expired credential may still hold allocations: accepted, kept a minute.
	r, err := s.Revoke("", creds(time.Now().Add(-time.Hour), "old"), RevokedByAdmin, time.Time{})
	if err != nil || r.Until.Before(time.Now().Add(50*time.Second)) {
		t.Errorf("revoking an expired credential: %+v %v", r, err)
	}
	found, err := s.Unrevoke(r.Username)
	if err != nil || !found {
		t.Errorf("Unrevoke(%q) = %v, %v", r.Username, found, err)
	}
	if found, _ := s.Unrevoke("nobody"); found {
		t.Error("lifted a revocation that was never made")
	}
}

// TestFileStore: revocations and usage survive a new store on the same directory; the
// journal is rewritten when it holds mostly dead lines; a broken file stops relay with
// the key and the file.
func TestFileStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for i := range 200 {
		r := Revocation{User: fmt.Sprintf("u%d", i), Until: until, Reason: RevokedByAdmin}
		if err := st.PutRevocation(ctx, r, 1000); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if _, err := st.DeleteRevocation(ctx, fmt.Sprintf("user:u%d", i-1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.PutRevocation(ctx, Revocation{User: "full", Until: until}, 1); !errors.Is(err, ErrFull) {
		t.Errorf("a second revocation with room for one: %v, want ErrFull", err)
	}
	totals, err := st.AddUsage(ctx, "2026-12-05", map[string]int64{"alice": 500, "bob": 0})
	if err != nil || totals["alice"] != 500 || totals["bob"] != 0 {
		t.Fatalf("AddUsage: %v %v", totals, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, revocationsFile))
	// 399 changes would be some 40 kB; compaction keeps it near what is live.
	if err != nil || fi.Size() > 8000 || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal after 399 changes leaving one: %v (%v)", fi, err)
	}
	if d, _ := os.Stat(dir); d.Mode().Perm() != 0o700 {
		t.Errorf("state_dir mode %v, want 0700", d.Mode().Perm())
	}

	st2, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	revs, _ := st2.Revocations(ctx)
	if len(revs) != 1 || revs[0].User != "u199" || !revs[0].Until.Equal(until) {
		t.Errorf("after reopening: %+v", revs)
	}
	if n, _ := st2.Usage(ctx, "2026-12-05", "alice"); n != 500 {
		t.Errorf("alice's usage after reopening: %d", n)
	}
	if n, _ := st2.Usage(ctx, "2026-12-06", "alice"); n != 0 {
		t.Errorf("alice's usage the next day: %d", n)
	}
	_ = st2.Close()

	if err := os.WriteFile(filepath.Join(dir, revocationsFile), []byte("{\"put\":{\"user\":\"x\"}}\n{broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileStore(dir); err == nil || !strings.Contains(err.Error(), "admin.state_dir") || !strings.Contains(err.Error(), revocationsFile+":2") {
		t.Errorf("a broken journal: %v", err)
	}
}

// TestUsageDays: usage goes to the store every sync, a user over the budget is
// refused (and its Usage says no), what earlier runs counted counts, and at 00:00 UTC
// the counts start again.
func TestUsageDays(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 5, 23, 59, 0, 0, time.UTC)}
	st, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// An earlier run relayed 600 bytes for carol today.
	if _, err := st.AddUsage(context.Background(), "2026-12-05", map[string]int64{"carol": 600}); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestState(t, st, c)
	s.SetBudget(1000)
	u := s.AcquireUsage("carol")
	if u.Total() != 600 || u.Limit() != 1000 {
		t.Errorf("carol's usage starts at %d of %d, want 600 of 1000 (an earlier run's)", u.Total(), u.Limit())
	}
	if s.OverBudget("carol") {
		t.Error("carol over budget at 600 of 1000")
	}
	if _, err := st.AddUsage(context.Background(), "2026-12-05", map[string]int64{"carol": 400}); err != nil {
		t.Fatal(err) // as another run of this node would (a fleet's nodes do the same in Redis)
	}
	s.syncUsage()
	if u.Total() != 1000 || !s.OverBudget("carol") {
		t.Errorf("carol at %d after the store learnt 1000: over budget %v", u.Total(), s.OverBudget("carol"))
	}
	rep, err := s.Usage("carol")
	if err != nil || rep.Day != "2026-12-05" || len(rep.Users) != 1 || rep.Users[0].Bytes != 1000 || !rep.Users[0].OverBudget ||
		!rep.Resets.Equal(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Usage(carol) = %+v, %v", rep, err)
	}
	// Midnight (UTC).
	c.set(time.Date(2026, 12, 6, 0, 0, 1, 0, time.UTC))
	s.syncUsage()
	if u.Total() != 0 || s.OverBudget("carol") {
		t.Errorf("carol at %d after midnight, over budget %v", u.Total(), s.OverBudget("carol"))
	}
	if rep, _ := s.Usage(""); rep.Day != "2026-12-06" || len(rep.Users) != 0 {
		t.Errorf("the new day's usage: %+v", rep)
	}
	s.ReleaseUsage("carol")
}

// TestEventsSlowReaderDropped: a reader that takes nothing is dropped once its outbox
// is full, without holding up publishing or the other readers; readers are capped.
func TestEventsSlowReaderDropped(t *testing.T) {
	h := newHub()
	slow, fast := h.subscribe(), h.subscribe()
	got := 0
	ev := map[string]string{"pad": strings.Repeat("x", 1000)}
	start := time.Now()
	for range 1000 { // about 1 MB: four times the outbox
		h.publish(EventAuthFailure, ev, false)
		msgs, dropped := fast.take()
		if dropped {
			t.Fatal("a reader that keeps up was dropped")
		}
		got += len(msgs)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("publishing 1000 events took %v", d)
	}
	if got != 1000 {
		t.Errorf("the fast reader got %d events, want 1000", got)
	}
	if msgs, dropped := slow.take(); !dropped || msgs != nil {
		t.Errorf("the slow reader: dropped %v with %d events left", dropped, len(msgs))
	}
	for range maxEventReaders - 1 { // the slow reader's place is free again
		if h.subscribe() == nil {
			t.Fatal("refused a reader under the cap")
		}
	}
	if h.subscribe() != nil {
		t.Errorf("a reader past the cap of %d", maxEventReaders)
	}
}

// startAPI serves the admin API for s on a free loopback port.
func startAPI(t *testing.T, s *State, f *fakeTURN, tokens ...string) string {
	t.Helper()
	api, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Tokens: tokens, State: s, TURN: f, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	return "http://" + api.Addr().String()
}

func do(t *testing.T, method, url string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIRequests: routes, methods and bodies get the right status and a JSON error.
func TestAPIRequests(t *testing.T) {
	s, f := newTestState(t, nil, nil)
	f.allocs = []relay.AllocationInfo{{ID: "x1", User: "alice", Created: time.Now()}}
	base := startAPI(t, s, f)
	js := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		body         string
		status       int
		contains     string
	}{
		{"GET", "/v1/allocations", nil, "", 200, `"id": "x1"`},
		{"GET", "/v1/allocations?user=bob", nil, "", 200, `[]`},
		{"POST", "/v1/allocations", js, "{}", 405, `"error"`},
		{"GET", "/v2/anything", nil, "", 404, `"error"`},
		{"DELETE", "/v1/allocations/nope", nil, "", 404, `no allocation \"nope\"`},
		{"POST", "/v1/revocations", nil, `{"user":"a"}`, 415, `Content-Type: application/json`},
		{"POST", "/v1/revocations", js, `{"user":`, 400, `"error"`},
		{"POST", "/v1/revocations", js, `{"user":"a","extra":1}`, 400, `unknown field`},
		{"POST", "/v1/revocations", js, `{"user":"` + strings.Repeat("a", 5000) + `"}`, 400, `"error"`},
		{"POST", "/v1/revocations", js, `{"username":"alice"}`, 400, `TURN REST credentials`},
		{"POST", "/v1/revocations", js, `{"user":"alice"}`, 201, `"allocations_ended": 1`},
		{"GET", "/v1/revocations", nil, "", 200, `"user": "alice"`},
		{"DELETE", "/v1/revocations/alice", nil, "", 200, `"lifted"`},
		{"DELETE", "/v1/revocations/alice", nil, "", 404, `not revoked`},
		{"GET", "/v1/auth-failures", nil, "", 200, `[]`},
		{"GET", "/v1/usage?user=alice", nil, "", 200, `"user": "alice"`},
		{"GET", "/v1/allocations", map[string]string{"Origin": "http://127.0.0.1:8080"}, "", 403, `web pages`},
		{"GET", "/v1/allocations", map[string]string{"Host": "rebound.example:9642"}, "", 403, `127.0.0.1`},
	} {
		status, body := do(t, tc.method, base+tc.path, tc.hdr, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.contains)
		}
		if status >= 400 {
			var e struct{ Error string }
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s %s: error body %q is not {\"error\": ...}", tc.method, tc.path, body)
			}
		}
	}
	if f.reason("x1") != relay.EndRevoked {
		t.Errorf("alice's allocation: %q", f.reason("x1"))
	}
}

// TestAPITokens: with tokens, every route wants one, compared whole.
func TestAPITokens(t *testing.T) {
	s, f := newTestState(t, nil, nil)
	base := startAPI(t, s, f, "first-token-0123456789abcdef0123", "second-token-0123456789abcdef012")
	for hdr, want := range map[string]int{
		"":                   401,
		"Bearer first-token": 401,
		"Bearer first-token-0123456789abcdef01234": 401,
		"Basic first-token-0123456789abcdef0123":   401,
		"Bearer first-token-0123456789abcdef0123":  200,
		"bearer  second-token-0123456789abcdef012": 200,
	} {
		status, body := do(t, "GET", base+"/v1/usage", map[string]string{"Authorization": hdr, "Host": "relay.example.org"}, "")
		if status != want || strings.Contains(body, "token-0123") {
			t.Errorf("Authorization %q: %d %s, want %d", hdr, status, body, want)
		}
	}
}

// TestAPIEventStream: /v1/events streams events as they happen; a client that stops
// reading is dropped once its outbox fills, and the stream of one that reads goes on.
func TestAPIEventStream(t *testing.T) {
	s, f := newTestState(t, nil, nil)
	base := startAPI(t, s, f)
	resp, err := http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	lines := bufio.NewReader(resp.Body)
	if l, _ := lines.ReadString('\n'); !strings.HasPrefix(l, ": ") {
		t.Fatalf("first line %q", l)
	}
	_, _ = lines.ReadString('\n') // the comment's blank line

	// A reader that never reads: a raw connection that sends the request and stops.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	waitFor(t, "two readers", func() bool {
		s.events.mu.Lock()
		defer s.events.mu.Unlock()
		return len(s.events.readers) == 2
	})

	s.Refused(relay.Refusal{User: "u1", Reason: "bad_password", Source: "192.0.2.1:5000"})
	want := "event: auth_failure\n"
	if l, _ := lines.ReadString('\n'); l != want {
		t.Fatalf("got %q, want %q", l, want)
	}
	l, _ := lines.ReadString('\n')
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), &ev); err != nil || ev["type"] != "auth_failure" ||
		ev["user"] != "u1" || ev["reason"] != "bad_password" || ev["time"] == nil {
		t.Fatalf("data %q: %v", l, err)
	}
	_, _ = lines.ReadString('\n')

	// 10 MB of events, each sent once the reader that reads has had the one before:
	// far past what the socket buffers and the outbox of the other one hold.
	var seen atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			l, err := lines.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(l, "event: ") {
				seen.Add(1)
			}
		}
	}()
	big := strings.Repeat("x", 32<<10)
	for i := range 320 {
		s.Refused(relay.Refusal{User: big, Reason: "malformed"})
		waitFor(t, "the reader that reads to get the event", func() bool { return seen.Load() == int64(i+1) })
	}
	waitFor(t, "the reader that does not read to be dropped", func() bool {
		s.events.mu.Lock()
		defer s.events.mu.Unlock()
		return len(s.events.readers) == 1
	})
	resp.Body.Close()
	<-done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

// TestFailuresRing: the refusals list keeps the last maxFailures, newest first.
func TestFailuresRing(t *testing.T) {
	s, _ := newTestState(t, nil, nil)
	for i := range maxFailures + 10 {
		s.Refused(relay.Refusal{User: fmt.Sprintf("u%d", i%3), Reason: fmt.Sprint(i)})
	}
	all := s.Failures("")
	if len(all) != maxFailures || all[0].Reason != fmt.Sprint(maxFailures+9) || all[len(all)-1].Reason != "10" {
		t.Errorf("%d kept, newest %q, oldest %q", len(all), all[0].Reason, all[len(all)-1].Reason)
	}
	if u := s.Failures("u1"); len(u) == 0 || u[0].User != "u1" {
		t.Errorf("failures of u1: %d", len(u))
	}
}
