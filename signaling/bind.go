package signaling

import (
	"crypto/subtle"
	"sync"
	"time"
	"unicode"
)

// Credentials bound to a signaling session ([signal] bind_credentials): {path}ice mints
// only for a PeerJS peer connected here, proven by its id and token, with the peer's id
// as the user id; when the peer leaves (LEAVE), or its socket is gone for
// credential_grace without the same token coming back, the credentials issued to it are
// revoked (Options.Revoke) and the allocations made with them end. Credentials copied
// out of a page are worthless once the page is closed.

// binder remembers, per peer id, the session that was issued credentials.
type binder struct {
	mu       sync.Mutex
	sessions map[string]*boundSession
	closed   bool
	firing   sync.WaitGroup // revocations under way (they may wait on the state store)
}

// boundSession is one peer's credentials: the token it registered with and when the
// last of them expires.
type boundSession struct {
	token string
	until time.Time
	grace *time.Timer // set while the socket is gone, before the revocation
}

// maxBoundSessions bounds the sessions remembered: peers with credentials and those in
// their grace time. Past it, a peer whose socket goes is revoked at once.
const maxBoundSessions = 100_000

func newBinder() *binder { return &binder{sessions: map[string]*boundSession{}} }

// livePeer reports whether a peer with id and token is connected to this node.
func (s *Server) livePeer(id, token string) bool {
	p, ok := s.reg.Lookup(id).(*peer)
	return ok && subtle.ConstantTimeCompare([]byte(p.token), []byte(token)) == 1 && !p.c.Closed()
}

// bindableID reports whether a peer id can be a user id of TURN credentials: auth's rule
// (1-256 bytes of printable UTF-8) without the ':' that ends the expiry.
func bindableID(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for _, r := range id {
		if r == ':' || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

// issued records credentials expiring at until for the peer id with token.
func (s *Server) issued(id, token string, until time.Time) {
	b := s.bind
	b.mu.Lock()
	cur := b.sessions[id]
	var stale *boundSession
	if cur != nil && cur.token != token {
		stale, cur = cur, nil // an earlier peer of that id, gone: its credentials go now
		b.stopGrace(stale)
		delete(b.sessions, id)
	}
	if cur == nil {
		cur = &boundSession{token: token}
		b.sessions[id] = cur
	}
	if until.After(cur.until) {
		cur.until = until
	}
	b.mu.Unlock()
	if stale != nil {
		s.revokeSession(id, stale)
	}
}

// full reports whether a new session can be remembered.
func (b *binder) full(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, known := b.sessions[id]
	return !known && len(b.sessions) >= maxBoundSessions
}

// connected is told of a peer registering: the same token back within the grace keeps
// the session's credentials; another token means the earlier session is over.
func (s *Server) connected(id, token string) {
	b := s.bind
	b.mu.Lock()
	cur := b.sessions[id]
	var stale *boundSession
	switch {
	case cur == nil:
	case cur.token == token:
		b.stopGrace(cur)
	default:
		stale = cur
		b.stopGrace(stale)
		delete(b.sessions, id)
	}
	b.mu.Unlock()
	if stale != nil {
		s.revokeSession(id, stale)
	}
}

// stopGrace stops a session's grace timer, if one is pending; b.mu is held.
func (b *binder) stopGrace(sess *boundSession) {
	if sess.grace != nil {
		if sess.grace.Stop() {
			b.firing.Done() // it will not run
		}
		sess.grace = nil
	}
}

// gone is told of a peer whose socket ended; left says it sent LEAVE.
func (s *Server) gone(id, token string, left bool) {
	if !left && s.livePeer(id, token) {
		return // replaced by a reconnect with the same token
	}
	b := s.bind
	b.mu.Lock()
	cur := b.sessions[id]
	if cur == nil || cur.token != token || b.closed {
		b.mu.Unlock()
		return
	}
	grace := s.conf().CredentialGrace
	if left || grace <= 0 || len(b.sessions) >= maxBoundSessions {
		delete(b.sessions, id)
		b.mu.Unlock()
		s.revokeSession(id, cur)
		return
	}
	if cur.grace == nil {
		b.firing.Add(1)
		cur.grace = time.AfterFunc(grace, func() {
			defer b.firing.Done()
			back := s.livePeer(id, token) // outside b.mu: a fleet's registry may ask Redis
			b.mu.Lock()
			if b.sessions[id] != cur || cur.grace == nil || b.closed || back {
				b.mu.Unlock()
				return
			}
			delete(b.sessions, id)
			b.mu.Unlock()
			s.revokeSession(id, cur)
		})
	}
	b.mu.Unlock()
}

// revokeSession revokes the credentials issued to a session.
func (s *Server) revokeSession(id string, sess *boundSession) {
	if s.revoke == nil {
		return
	}
	// A session whose credentials all expired may still hold allocations (they keep
	// the credentials they were made with): the revocation ends them, and lasts a
	// minute so that every node of a fleet sees it.
	until := sess.until
	if min := time.Now().Add(time.Minute); until.Before(min) {
		until = min
	}
	s.log.Info("bind_credentials: the peer left; revoking the credentials issued to it", "user", id, "until", until)
	s.revoke(id, until)
}

// close stops the grace timers: a server that stops revokes nothing (its peers come
// back with the same tokens to another start, or lose nothing by it).
func (b *binder) close() {
	b.mu.Lock()
	b.closed = true
	for _, sess := range b.sessions {
		b.stopGrace(sess)
	}
	b.mu.Unlock()
	b.firing.Wait()
}
