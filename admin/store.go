package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Revocation cuts credentials off before they expire: every credential of a user id, or
// one credential (its full username). It lapses by itself at Until, when whatever it
// revokes has expired anyway.
type Revocation struct {
	User     string    `json:"user,omitempty"`
	Username string    `json:"username,omitempty"`
	Until    time.Time `json:"until"`
	Created  time.Time `json:"created"`
	// Why: "admin" (the API), or "signaling_session_ended" (bind_credentials: the
	// peer the credentials were issued to left).
	Reason string `json:"reason"`
}

// Reasons of revocations.
const (
	RevokedByAdmin      = "admin"
	RevokedSessionEnded = "signaling_session_ended"
)

// Key names a revocation in a Store: "user:<id>" or "username:<expiry>:<id>".
func (r *Revocation) Key() string {
	if r.Username != "" {
		return "username:" + r.Username
	}
	return "user:" + r.User
}

// Change is a revocation made or lifted by another node, as a Store reports it. Reload
// means the store lost track (a missed message, a reconnect): read them all again.
type Change struct {
	Put    *Revocation // made
	Delete string      // lifted: its Key
	Reload bool
}

// ErrFull: the store holds MaxRevocations already.
var ErrFull = errors.New("admin: too many revocations")

// Store is where revocations and today's byte usage live beyond this process: a
// directory ([admin] state_dir) on a single node, Redis in a fleet (cluster.StateStore),
// or nowhere (memory only). Calls may block on the network; the State never makes them
// on a request's read loop.
type Store interface {
	// Revocations returns every revocation held.
	Revocations(ctx context.Context) ([]Revocation, error)
	// PutRevocation adds r (or replaces the one with its Key); ErrFull when max are held.
	PutRevocation(ctx context.Context, r Revocation, max int) error
	// DeleteRevocation lifts the revocation with key and reports whether there was one.
	DeleteRevocation(ctx context.Context, key string) (bool, error)
	// PruneRevocations forgets revocations that lapsed before now.
	PruneRevocations(ctx context.Context, now time.Time) error
	// Watch calls f for changes other nodes make, until Close; a single node's store
	// never calls it.
	Watch(f func(Change))
	// AddUsage adds this node's bytes since the last call (add: user id -> bytes, zeros
	// allowed, to learn a total) to day's and returns the totals of those users over
	// every node and earlier runs.
	AddUsage(ctx context.Context, day string, add map[string]int64) (map[string]int64, error)
	// Usage returns one user's total for day.
	Usage(ctx context.Context, day, user string) (int64, error)
	Close() error
}

// fileStore keeps revocations and usage in memory and, with a directory, in two files
// there: revocations.jsonl, a journal of changes replayed at start (appending is cheap
// when sessions end by the thousand; it is rewritten when it holds twice what is live),
// and usage.json, today's totals, rewritten at most every usageWriteEvery and on Close.
type fileStore struct {
	dir string // "": memory only

	mu      sync.Mutex
	revs    map[string]Revocation
	journal *os.File
	lines   int // lines in the journal
	day     string
	usage   map[string]int64
	dirty   bool
	written time.Time
}

// Files in state_dir.
const (
	revocationsFile = "revocations.jsonl"
	usageFile       = "usage.json"
	// usageWriteEvery bounds how often usage.json is rewritten: a restart loses at most
	// this much of the day's counting.
	usageWriteEvery = 5 * time.Second
	// maxStoredUsers bounds the users whose usage a day's file holds.
	maxStoredUsers = 200_000
)

// NewFileStore opens (creating it, mode 0700) the state directory dir and reads what it
// holds; dir "" keeps everything in memory, lost at exit.
func NewFileStore(dir string) (Store, error) {
	s := &fileStore{dir: dir, revs: map[string]Revocation{}, usage: map[string]int64{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin.state_dir %q: %w", dir, err)
	}
	if err := s.loadRevocations(); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, usageFile)); err == nil {
		var u usageDoc
		if err := json.Unmarshal(b, &u); err != nil {
			return nil, fmt.Errorf("admin.state_dir: %s: %w (delete the file to start the day's counts afresh)", filepath.Join(dir, usageFile), err)
		}
		s.day = u.Day
		if u.Users != nil {
			s.usage = u.Users
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin.state_dir: %w", err)
	}
	// Rewrite the journal compactly: it is also the check that the directory is writable.
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

type usageDoc struct {
	Day   string           `json:"day"`
	Users map[string]int64 `json:"users"`
}

// journalEntry is one line of revocations.jsonl.
type journalEntry struct {
	Put    *Revocation `json:"put,omitempty"`
	Delete string      `json:"delete,omitempty"`
}

func (s *fileStore) loadRevocations() error {
	path := filepath.Join(s.dir, revocationsFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin.state_dir: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var e journalEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// A line cut short by a crash can only be the last one.
			return fmt.Errorf("admin.state_dir: %s:%d: %w (delete the line or the file)", path, n, err)
		}
		switch {
		case e.Put != nil:
			s.revs[e.Put.Key()] = *e.Put
		case e.Delete != "":
			delete(s.revs, e.Delete)
		}
	}
	return sc.Err()
}

// compact rewrites the journal with one line per live revocation. s.mu is held (or the
// store is not shared yet).
func (s *fileStore) compact() error {
	if s.dir == "" {
		return nil
	}
	path := filepath.Join(s.dir, revocationsFile)
	var buf []byte
	for _, r := range s.revs {
		line, err := json.Marshal(journalEntry{Put: &r})
		if err != nil {
			return err
		}
		buf = append(append(buf, line...), '\n')
	}
	if err := writeAtomic(path, buf); err != nil {
		return fmt.Errorf("admin.state_dir: %w", err)
	}
	if s.journal != nil {
		_ = s.journal.Close()
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("admin.state_dir: %w", err)
	}
	s.journal, s.lines = f, len(s.revs)
	return nil
}

// appendJournal records a change; s.mu is held.
func (s *fileStore) appendJournal(e journalEntry) error {
	if s.dir == "" {
		return nil
	}
	if s.lines > 2*len(s.revs)+64 {
		return s.compact() // already holds the change
	}
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := s.journal.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("admin.state_dir: %w", err)
	}
	s.lines++
	return nil
}

// writeAtomic replaces path with b: a crash leaves the old file or the new one.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

func (s *fileStore) Revocations(context.Context) ([]Revocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Revocation, 0, len(s.revs))
	for _, r := range s.revs {
		out = append(out, r)
	}
	return out, nil
}

func (s *fileStore) PutRevocation(_ context.Context, r Revocation, max int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := r.Key()
	if _, ok := s.revs[k]; !ok && len(s.revs) >= max {
		return ErrFull
	}
	s.revs[k] = r
	return s.appendJournal(journalEntry{Put: &r})
}

func (s *fileStore) DeleteRevocation(_ context.Context, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.revs[key]; !ok {
		return false, nil
	}
	delete(s.revs, key)
	return true, s.appendJournal(journalEntry{Delete: key})
}

func (s *fileStore) PruneRevocations(_ context.Context, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.revs)
	for k, r := range s.revs {
		if r.Until.Before(now) {
			delete(s.revs, k)
		}
	}
	if len(s.revs) == n {
		return nil
	}
	return s.compact()
}

func (s *fileStore) Watch(func(Change)) {}

func (s *fileStore) AddUsage(_ context.Context, day string, add map[string]int64) (map[string]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if day != s.day {
		s.day, s.usage = day, map[string]int64{}
	}
	out := make(map[string]int64, len(add))
	for user, n := range add {
		cur, ok := s.usage[user]
		// Past maxStoredUsers a new user is counted in memory only (State's table).
		if n != 0 && (ok || len(s.usage) < maxStoredUsers) {
			cur += n
			s.usage[user] = cur
			s.dirty = true
		}
		out[user] = cur
	}
	return out, s.writeUsage(false)
}

// cachedUsage answers Usage without blocking: a fileStore holds the day in memory.
func (s *fileStore) cachedUsage(day, user string) (int64, bool) {
	n, _ := s.Usage(context.Background(), day, user)
	return n, true
}

func (s *fileStore) Usage(_ context.Context, day, user string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if day != s.day {
		return 0, nil
	}
	return s.usage[user], nil
}

// writeUsage rewrites usage.json when it changed, at most every usageWriteEvery unless
// now; s.mu is held.
func (s *fileStore) writeUsage(now bool) error {
	if s.dir == "" || !s.dirty || (!now && time.Since(s.written) < usageWriteEvery) {
		return nil
	}
	b, err := json.Marshal(usageDoc{Day: s.day, Users: s.usage})
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(s.dir, usageFile), b); err != nil {
		return fmt.Errorf("admin.state_dir: %w", err)
	}
	s.dirty, s.written = false, time.Now()
	return nil
}

func (s *fileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.writeUsage(true)
	if s.journal != nil {
		if cerr := s.journal.Close(); err == nil {
			err = cerr
		}
		s.journal = nil
	}
	return err
}
