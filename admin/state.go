package admin

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/relayproject/relay/relay"
)

// Caps of what the State holds.
const (
	// MaxRevocations bounds the revocations held (per fleet with Redis): each is a
	// couple of hundred bytes. bind_credentials adds one per peer that leaves with
	// credentials, lapsing after credential_ttl.
	MaxRevocations = 100_000
	// maxFailures is how many refusals GET /v1/auth-failures remembers (a ring).
	maxFailures = 1000
	// maxUsers bounds the users whose usage is kept in memory; past it, users with no
	// allocation and nothing left to report are forgotten (the store keeps their totals).
	maxUsers = 50_000
	// syncEvery is how often usage goes to the store and lapsed revocations go.
	syncEvery = time.Second
	// storeTimeout bounds every call to the store.
	storeTimeout = 2 * time.Second
)

// Ender ends allocations: the TURN server (relay.Server).
type Ender interface {
	EndAllocations(match func(a *relay.AllocationInfo) bool, reason string) int
}

// Options configures a State.
type Options struct {
	Store Store // nil: memory only
	// Budget is [limits] user_bytes_per_day; 0 is none.
	Budget int64
	// MaxTTL is [auth] max_ttl: a revoked user stays revoked that long (the longest any
	// credential issued before could still be valid).
	MaxTTL time.Duration
	Logger *slog.Logger
	Now    func() time.Time // nil: time.Now (tests move the clock)
}

// State is the operator's state: revocations, byte usage against the budget, the last
// refusals and the event stream. It is the TURN server's relay.Control and what the
// admin API reads and changes.
type State struct {
	store  Store
	log    *slog.Logger
	now    func() time.Time
	maxTTL time.Duration
	events *hub
	ender  Ender

	revMu sync.RWMutex
	revs  map[string]Revocation // by Key

	failMu   sync.Mutex
	failures [maxFailures]relay.Refusal
	failNext int
	failN    int

	useMu  sync.Mutex
	budget int64
	day    string // UTC date the counts are for, "2006-01-02"
	users  map[string]*userUsage

	storeDown atomic.Bool // the last call to the store failed (logged once per outage)

	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

// userUsage is one user id's counts on this node.
type userUsage struct {
	u       relay.Usage
	flushed int64 // of u.Local(), what the store has
	known   bool  // u.Others() has been read from the store
	refs    int   // live allocations holding u
	logged  bool  // "byte budget used" logged today
}

// NewState reads the revocations in o.Store and starts keeping state; Start begins the
// background sync, Close ends it.
func NewState(o Options) *State {
	if o.Store == nil {
		o.Store = &fileStore{revs: map[string]Revocation{}, usage: map[string]int64{}}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 24 * time.Hour
	}
	s := &State{store: o.Store, log: o.Logger, now: o.Now, maxTTL: o.MaxTTL, events: newHub(),
		revs: map[string]Revocation{}, budget: o.Budget, users: map[string]*userUsage{}, stop: make(chan struct{})}
	s.day = dayOf(s.now())
	// TURN never waits for Redis: without it the node starts with no revocations, and
	// reads them when the store answers (the fleet store polls).
	s.noteStore("reading revocations", s.reloadRevocations())
	return s
}

// Attach gives the State the server whose allocations revocations end.
func (s *State) Attach(e Ender) { s.ender = e }

// Start begins syncing with the store (usage every second, revocations as other nodes
// change them).
func (s *State) Start() {
	s.store.Watch(s.applyChange)
	s.done.Add(1)
	go s.loop()
}

// Close stops syncing, hands the store the last counts and closes it.
func (s *State) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.done.Wait()
	s.syncUsage()
	return s.store.Close()
}

func (s *State) loop() {
	defer s.done.Done()
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.syncUsage()
			s.pruneRevocations()
		}
	}
}

// noteStore logs the first failure of the store after successes, and its return: not a
// line a second while Redis is away.
func (s *State) noteStore(what string, err error) {
	if err == nil {
		if s.storeDown.Swap(false) {
			s.log.Info("admin: the state store answers again")
		}
		return
	}
	if !s.storeDown.Swap(true) {
		s.log.Warn("admin: the state store fails: usage is counted here and stored when it is back; revocations cannot be made meanwhile", "while", what, "err", err)
	}
}

func dayOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

func (s *State) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// ---- revocations ----

// Revoked implements relay.Control.
func (s *State) Revoked(username, userID string) bool {
	s.revMu.RLock()
	defer s.revMu.RUnlock()
	if len(s.revs) == 0 {
		return false
	}
	if _, ok := s.revs["username:"+username]; ok {
		return true
	}
	if r, ok := s.revs["user:"+userID]; ok {
		return covers(&r, username)
	}
	return false
}

// covers reports whether a user revocation applies to credentials username. The
// operator's covers every credential of the user while it lasts. A session's
// (bind_credentials) covers only those expiring by r.Until, the ones issued to the
// session: a peer that comes back later under the same id gets credentials that expire
// later, and they work. A static user's never expire: covered while r lasts.
func covers(r *Revocation, username string) bool {
	if r.Reason != RevokedSessionEnded {
		return true
	}
	exp, ok := relay.CredentialExpiry(username)
	return !ok || !exp.After(r.Until)
}

// matches reports whether r applies to a live allocation.
func matches(r *Revocation, a *relay.AllocationInfo) bool {
	if r.Username != "" {
		return a.Username == r.Username
	}
	return a.User == r.User && covers(r, a.Username)
}

// Revoke validates and stores a revocation (user id, or a username "<expiry>:<id>") and
// ends the allocations it covers on this node; the store carries it to the others.
// until, when not zero, is when a user revocation lapses (bind_credentials: the expiry
// of the last credentials issued to the session); zero: [auth] max_ttl from now.
func (s *State) Revoke(user, username, reason string, until time.Time) (Revocation, error) {
	r, _, err := s.revoke(user, username, reason, until)
	return r, err
}

// revoke is Revoke, also saying how many of this node's allocations it ended.
func (s *State) revoke(user, username, reason string, until time.Time) (Revocation, int, error) {
	now := s.now().UTC().Truncate(time.Second)
	r := Revocation{User: user, Username: username, Created: now, Reason: reason}
	switch {
	case (user == "") == (username == ""):
		return r, 0, errBadRevocation("give either \"user\" (a user id) or \"username\" (one credential, \"<expiry>:<id>\")")
	case user != "" && !validUser(user):
		return r, 0, errBadRevocation("user must be 1-256 bytes of printable UTF-8 without ':'")
	case username != "":
		exp, ok := relay.CredentialExpiry(username)
		if !ok || !validUser(username[strings.IndexByte(username, ':')+1:]) {
			return r, 0, errBadRevocation("username must be TURN REST credentials \"<unix-expiry>:<user id>\"; revoke a static user with {\"user\": NAME}")
		}
		// Lapses when the credential expires; an expired one may still hold allocations
		// (they keep the credentials they were made with), which end now: keep the entry
		// a minute so that every node sees it.
		r.Until = exp
		if min := now.Add(time.Minute); r.Until.Before(min) {
			r.Until = min
		}
	default:
		r.Until = until
		if r.Until.IsZero() {
			// Every credential of the user issued until now has expired by then; the
			// user stays cut off until then, whatever it is issued meanwhile.
			s.revMu.RLock()
			r.Until = now.Add(s.maxTTL + 5*time.Second)
			s.revMu.RUnlock()
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.store.PutRevocation(ctx, r, MaxRevocations); err != nil {
		return r, 0, err
	}
	return r, s.put(r), nil
}

type errBadRevocation string

func (e errBadRevocation) Error() string { return string(e) }

// IsBadRequest reports whether err is the caller's mistake (a 400, not a 500).
func IsBadRequest(err error) bool {
	var e errBadRevocation
	return errors.As(err, &e)
}

// put applies a revocation made here or on another node and returns how many
// allocations it ended here.
func (s *State) put(r Revocation) int {
	s.revMu.Lock()
	s.revs[r.Key()] = r
	s.revMu.Unlock()
	s.events.publish(EventRevoked, r, false)
	return s.endRevoked([]Revocation{r})
}

// endRevoked ends this node's allocations that revocations cover.
func (s *State) endRevoked(rs []Revocation) int {
	if s.ender == nil || len(rs) == 0 {
		return 0
	}
	n := s.ender.EndAllocations(func(a *relay.AllocationInfo) bool {
		for i := range rs {
			if matches(&rs[i], a) {
				return true
			}
		}
		return false
	}, relay.EndRevoked)
	if n > 0 {
		s.log.Info("revocation: ending allocations", "allocations", n)
	}
	return n
}

// Unrevoke lifts the revocation of a user id (or, if key parses as one, of a single
// credential) and reports whether there was one.
func (s *State) Unrevoke(key string) (bool, error) {
	keys := []string{"user:" + key}
	if _, ok := relay.CredentialExpiry(key); ok {
		keys = append([]string{"username:" + key}, keys...)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	for _, k := range keys {
		found, err := s.store.DeleteRevocation(ctx, k)
		if err != nil {
			return false, err
		}
		if found {
			s.revMu.Lock()
			delete(s.revs, k)
			s.revMu.Unlock()
			return true, nil
		}
	}
	return false, nil
}

// Revocations lists the revocations in force, newest first.
func (s *State) Revocations() []Revocation {
	s.revMu.RLock()
	out := make([]Revocation, 0, len(s.revs))
	for _, r := range s.revs {
		out = append(out, r)
	}
	s.revMu.RUnlock()
	slices.SortFunc(out, func(a, b Revocation) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(a.Key(), b.Key()))
	})
	return out
}

// applyChange applies what another node changed (Store.Watch).
func (s *State) applyChange(c Change) {
	switch {
	case c.Reload:
		s.noteStore("reading revocations", s.reloadRevocations())
	case c.Put != nil:
		_ = s.put(*c.Put)
	case c.Delete != "":
		s.revMu.Lock()
		delete(s.revs, c.Delete)
		s.revMu.Unlock()
	}
}

// reloadRevocations reads every revocation from the store and ends what they cover.
func (s *State) reloadRevocations() error {
	ctx, cancel := s.ctx()
	defer cancel()
	list, err := s.store.Revocations(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	m := make(map[string]Revocation, len(list))
	live := list[:0]
	for _, r := range list {
		if !r.Until.Before(now) { // a lapsed one no longer covers anything
			m[r.Key()] = r
			live = append(live, r)
		}
	}
	s.revMu.Lock()
	s.revs = m
	s.revMu.Unlock()
	s.endRevoked(live)
	return nil
}

// pruneRevocations forgets lapsed revocations, here and in the store.
func (s *State) pruneRevocations() {
	now := s.now()
	pruned := false
	s.revMu.Lock()
	for k, r := range s.revs {
		if r.Until.Before(now) {
			delete(s.revs, k)
			pruned = true
		}
	}
	s.revMu.Unlock()
	if pruned {
		ctx, cancel := s.ctx()
		defer cancel()
		s.noteStore("pruning revocations", s.store.PruneRevocations(ctx, now))
	}
}

// validUser is auth's rule for user ids: 1-256 bytes of printable UTF-8 (and no ':').
func validUser(u string) bool {
	if u == "" || len(u) > 256 || !utf8.ValidString(u) || strings.IndexByte(u, ':') >= 0 {
		return false
	}
	for _, r := range u {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ---- refusals ----

// Refused implements relay.Control.
func (s *State) Refused(r relay.Refusal) {
	s.failMu.Lock()
	s.failures[s.failNext] = r
	s.failNext = (s.failNext + 1) % maxFailures
	s.failN = min(s.failN+1, maxFailures)
	s.failMu.Unlock()
	s.events.publish(EventAuthFailure, r, true) // at the refusal's own time
}

// Failures lists the last refusals, newest first, of user only if it is not "".
func (s *State) Failures(user string) []relay.Refusal {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	out := []relay.Refusal{}
	for i := 1; i <= s.failN; i++ {
		r := s.failures[(s.failNext-i+maxFailures)%maxFailures]
		if user == "" || r.User == user {
			out = append(out, r)
		}
	}
	return out
}

// ---- allocations ----

// AllocationCreated implements relay.Control.
func (s *State) AllocationCreated(a relay.AllocationInfo) {
	s.events.publish(EventAllocationCreated, a, false)
}

// AllocationEnded implements relay.Control.
func (s *State) AllocationEnded(e relay.AllocationEnd) {
	s.events.publish(EventAllocationEnded, e, false)
}

// ---- usage and budgets ----

// SetMaxTTL changes [auth] max_ttl for revocations made from now on (a reload).
func (s *State) SetMaxTTL(d time.Duration) {
	s.revMu.Lock()
	s.maxTTL = d
	s.revMu.Unlock()
}

// SetBudget changes [limits] user_bytes_per_day (a reload).
func (s *State) SetBudget(n int64) {
	s.useMu.Lock()
	defer s.useMu.Unlock()
	s.budget = n
	for _, e := range s.users {
		e.u.SetLimit(n)
	}
}

// entry returns userID's counts, made if needed; s.useMu is held. A store that holds
// the day in memory (a single node's) tells at once what the user relayed before this
// process counted it; another's total comes with the next sync.
func (s *State) entry(userID string) *userUsage {
	e := s.users[userID]
	if e == nil {
		e = &userUsage{}
		e.u.SetLimit(s.budget)
		if c, ok := s.store.(interface {
			cachedUsage(day, user string) (int64, bool)
		}); ok {
			if n, ok := c.cachedUsage(s.day, userID); ok {
				e.u.SetOthers(n)
				e.known = true
			}
		}
		s.users[userID] = e
	}
	return e
}

// AcquireUsage implements relay.Control: the counter is read by the next sync.
func (s *State) AcquireUsage(userID string) *relay.Usage {
	s.useMu.Lock()
	defer s.useMu.Unlock()
	e := s.entry(userID)
	e.refs++
	return &e.u
}

// ReleaseUsage implements relay.Control.
func (s *State) ReleaseUsage(userID string) {
	s.useMu.Lock()
	defer s.useMu.Unlock()
	if e := s.users[userID]; e != nil && e.refs > 0 {
		e.refs--
	}
}

// OverBudget implements relay.Control. A user this node has not counted yet today is
// learnt from the store by the next sync (within a second); until then it is let in.
func (s *State) OverBudget(userID string) bool {
	s.useMu.Lock()
	defer s.useMu.Unlock()
	if s.budget <= 0 {
		return false
	}
	e := s.entry(userID)
	return e.u.Total() >= s.budget
}

// syncUsage hands the store what this node relayed since the last sync and learns the
// totals of every user it counts; at 00:00 UTC it starts a new day.
func (s *State) syncUsage() {
	today := dayOf(s.now())
	s.useMu.Lock()
	day := s.day
	add := make(map[string]int64)
	local := make(map[string]int64)
	for id, e := range s.users {
		// New bytes to hand over, a total not learnt yet, or, with a budget to enforce,
		// a user with allocations here whose total other nodes may be moving.
		l := e.u.Local()
		if l != e.flushed || !e.known || (e.refs > 0 && s.budget > 0) {
			add[id] = l - e.flushed
			local[id] = l
		}
	}
	s.useMu.Unlock()

	var totals map[string]int64
	if len(add) > 0 {
		ctx, cancel := s.ctx()
		var err error
		totals, err = s.store.AddUsage(ctx, day, add)
		cancel()
		s.noteStore("storing byte usage", err)
	}

	s.useMu.Lock()
	defer s.useMu.Unlock()
	if totals != nil {
		for id, l := range local {
			e := s.users[id]
			if e == nil {
				continue
			}
			e.flushed, e.known = l, true
			// What the rest counted; never below zero (a store that could not keep a
			// new user returns only what it had).
			e.u.SetOthers(max(totals[id]-l, 0))
			if s.budget > 0 && e.u.Total() >= s.budget && !e.logged {
				e.logged = true
				s.log.Info("byte budget used: the user's allocations relay nothing more and new Allocates get 486 until 00:00 UTC",
					"user", id, "bytes", e.u.Total(), "budget", s.budget, "allocations", e.refs)
			}
		}
	}
	if today != day {
		// A new day: what was flushed is the old day's; what the store did not take
		// (it failed just now) is counted on the new one rather than lost.
		s.day = today
		for id, e := range s.users {
			e.u.Reset(e.flushed)
			e.flushed, e.known, e.logged = 0, false, false
			if e.refs == 0 {
				delete(s.users, id)
			}
		}
		s.log.Info("byte budgets: a new day (UTC)", "day", today)
	}
	if len(s.users) > maxUsers {
		for id, e := range s.users {
			if e.refs == 0 && e.known && e.u.Local() == e.flushed && (s.budget <= 0 || e.u.Total() < s.budget) {
				delete(s.users, id)
			}
		}
	}
}

// UserUsage is one user's relayed bytes today.
type UserUsage struct {
	User       string `json:"user"`
	Bytes      int64  `json:"bytes"`
	OverBudget bool   `json:"over_budget"`
}

// UsageReport answers GET /v1/usage.
type UsageReport struct {
	Day    string      `json:"day"`    // UTC
	Budget int64       `json:"budget"` // [limits] user_bytes_per_day; 0 = none
	Resets time.Time   `json:"resets"` // the next 00:00 UTC
	Users  []UserUsage `json:"users"`  // most bytes first
	// Truncated: more users relayed today than the report lists (maxReportedUsers).
	Truncated bool `json:"truncated,omitempty"`
}

const maxReportedUsers = 1000

// Usage reports today's bytes: of user (asking the store, so every node's count is
// in), or of every user this node has counted.
func (s *State) Usage(user string) (UsageReport, error) {
	s.useMu.Lock()
	day, budget := s.day, s.budget
	var list []UserUsage
	if user == "" {
		for id, e := range s.users {
			if t := e.u.Total(); t > 0 {
				list = append(list, UserUsage{User: id, Bytes: t})
			}
		}
	} else if e := s.users[user]; e != nil && e.known {
		list = append(list, UserUsage{User: user, Bytes: e.u.Total()})
	}
	s.useMu.Unlock()
	if user != "" && len(list) == 0 {
		ctx, cancel := s.ctx()
		n, err := s.store.Usage(ctx, day, user)
		cancel()
		if err != nil {
			return UsageReport{}, err
		}
		list = append(list, UserUsage{User: user, Bytes: n})
	}
	d, _ := time.Parse(time.DateOnly, day)
	r := UsageReport{Day: day, Budget: budget, Resets: d.AddDate(0, 0, 1), Users: list}
	slices.SortFunc(r.Users, func(a, b UserUsage) int { return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.User, b.User)) })
	if len(r.Users) > maxReportedUsers {
		r.Users, r.Truncated = r.Users[:maxReportedUsers], true
	}
	for i := range r.Users {
		r.Users[i].OverBudget = budget > 0 && r.Users[i].Bytes >= budget
	}
	if r.Users == nil {
		r.Users = []UserUsage{}
	}
	return r, nil
}
