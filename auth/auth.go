// Package auth owns TURN credentials: minting and verifying time-limited
// TURN REST credentials (draft-uberti-behave-turn-rest) and static users.
//
// It never touches sockets and never logs: secrets, passwords and keys must
// not leave this package except as the values its functions return.
package auth

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // RFC 8489 long-term key is defined as MD5.
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // TURN REST passwords are defined as HMAC-SHA1.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxUserIDLen is the longest accepted user id (the part after the first ':'
// of a REST username, or a static user name), in bytes.
const maxUserIDLen = 256

// futureTolerance absorbs clock skew between the minting service and this
// server, and the rounding of expiries to whole seconds.
const futureTolerance = 5 * time.Second

// maxExpiryDigits bounds the expiry field; 19 digits is the most an int64 can
// hold, longer inputs are malformed without being parsed.
const maxExpiryDigits = 19

// Options configures an Authenticator.
type Options struct {
	Secrets []string          // first signs, all verify (rotation)
	MaxTTL  time.Duration     // credentials expiring further ahead than now+MaxTTL are refused
	Users   map[string]string // static users: name -> password
	Now     func() time.Time  // nil: time.Now (tests inject)
}

// Authenticator verifies and mints TURN credentials. It is immutable after
// New and safe for concurrent use.
type Authenticator struct {
	secrets []string
	maxTTL  time.Duration
	users   map[string]string
	now     func() time.Time
}

// Reason says why a credential was refused. Values are metric label values
// (a fixed, small set), never user input.
type Reason string

// Reasons a credential is refused.
const (
	// ReasonMalformed: not a static user and not "<digits>:<id>" (also: empty
	// id, id longer than 256 bytes, expiry not a positive integer, control
	// characters).
	ReasonMalformed Reason = "malformed"
	// ReasonExpired: expiry < now.
	ReasonExpired Reason = "expired"
	// ReasonTooFarFuture: expiry > now + MaxTTL (+ 5 s tolerance).
	ReasonTooFarFuture Reason = "too_far_future"
	// ReasonUnknownUser: REST form but no secrets configured.
	ReasonUnknownUser Reason = "unknown_user"
	// ReasonBadPassword is used by callers when MESSAGE-INTEGRITY does not
	// verify with any candidate key.
	ReasonBadPassword Reason = "bad_password"
)

// New validates o and returns an Authenticator. Zero secrets are allowed
// (REST credentials then never verify); an empty secret, MaxTTL <= 0 while
// secrets are configured, or an invalid static user are errors. The error
// never contains a secret or a password.
func New(o Options) (*Authenticator, error) {
	a := &Authenticator{
		maxTTL: o.MaxTTL,
		now:    o.Now,
		users:  make(map[string]string, len(o.Users)),
	}
	if a.now == nil {
		a.now = time.Now
	}
	for i, s := range o.Secrets {
		if s == "" {
			return nil, fmt.Errorf("auth: secret #%d is empty", i+1)
		}
	}
	if len(o.Secrets) > 0 && o.MaxTTL <= 0 {
		return nil, errors.New("auth: max TTL must be positive when secrets are configured")
	}
	a.secrets = append([]string(nil), o.Secrets...)
	for name, pass := range o.Users {
		if !validUserID(name) {
			// The name is deliberately not echoed: it may be mistyped secret material.
			return nil, errors.New("auth: static user name must be 1-256 bytes of printable UTF-8")
		}
		if pass == "" {
			return nil, errors.New("auth: static user has an empty password")
		}
		a.users[name] = pass
	}
	return a, nil
}

// HasSecrets reports whether REST credentials can be minted and verified.
func (a *Authenticator) HasSecrets() bool { return len(a.secrets) > 0 }

// Candidates returns the long-term keys that may have produced
// MESSAGE-INTEGRITY for this username and realm: one per secret for REST
// usernames (first secret first), one for a static user. userID is the
// quota/account id: the part after the first ':' for REST usernames, the name
// for static users. Static users are looked up first (exact match), then the
// REST form. On refusal keys is nil, userID is empty and reason says why.
func (a *Authenticator) Candidates(username, realm string) (keys [][]byte, userID string, reason Reason, ok bool) {
	userID, reason, ok = a.Admit(username)
	if !ok {
		return nil, "", reason, false
	}
	return a.Keys(username, realm), userID, "", true
}

// Keys derives the keys Candidates returns, for a username Admit accepted.
func (a *Authenticator) Keys(username, realm string) [][]byte {
	if pass, found := a.users[username]; found {
		return [][]byte{LongTermKey(username, realm, pass)}
	}
	keys := make([][]byte, len(a.secrets))
	for i, s := range a.secrets {
		keys[i] = LongTermKey(username, realm, RESTPassword(s, username))
	}
	return keys
}

// Admit runs Candidates' checks without deriving any key: whether username names a
// static user or well-formed REST credentials that are neither expired nor too far in
// the future. A caller holding a key it verified with this Authenticator before may
// check a message against it and skip Candidates.
func (a *Authenticator) Admit(username string) (userID string, reason Reason, ok bool) {
	if _, found := a.users[username]; found {
		return username, "", true
	}
	expiry, id, good := parseREST(username)
	if !good {
		return "", ReasonMalformed, false
	}
	if len(a.secrets) == 0 {
		return "", ReasonUnknownUser, false
	}
	now := a.now().Unix()
	if expiry < now {
		return "", ReasonExpired, false
	}
	// expiry >= now here, so the difference cannot overflow for any
	// realistic clock; comparing it avoids overflowing now+MaxTTL instead.
	limit := int64(a.maxTTL/time.Second) + int64(futureTolerance/time.Second)
	if expiry-now > limit {
		return "", ReasonTooFarFuture, false
	}
	return id, "", true
}

// Credentials is what `relay creds` and the ICE endpoint hand out.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TTL      int64  `json:"ttl"` // seconds
}

// Mint makes time-limited credentials for userID with the first secret. ttl
// is clamped to MaxTTL and rounded up to whole seconds; ttl <= 0 is an error.
// userID must be non-empty, without ':' or control characters, at most 256
// bytes. Minting without secrets is an error.
func (a *Authenticator) Mint(userID string, ttl time.Duration) (Credentials, error) {
	if len(a.secrets) == 0 {
		return Credentials{}, errors.New("auth: no secret configured")
	}
	if ttl <= 0 {
		return Credentials{}, errors.New("auth: ttl must be positive")
	}
	if !validUserID(userID) || strings.IndexByte(userID, ':') >= 0 {
		return Credentials{}, errors.New("auth: user id must be 1-256 bytes of printable UTF-8 without ':'")
	}
	if ttl > a.maxTTL {
		ttl = a.maxTTL
	}
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	username := strconv.FormatInt(a.now().Unix()+secs, 10) + ":" + userID
	return Credentials{
		Username: username,
		Password: RESTPassword(a.secrets[0], username),
		TTL:      secs,
	}, nil
}

// LongTermKey computes the RFC 8489 long-term key MD5(username:realm:password).
func LongTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write([]byte(password))
	return h.Sum(nil)
}

// RESTPassword computes base64(HMAC-SHA1(secret, username)).
func RESTPassword(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// GenerateSecret returns a fresh random secret (32 random bytes, base64 raw
// URL encoding) for servers started without one.
func GenerateSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// parseREST splits "<expiry>:<id>" on the first ':' and validates both parts.
func parseREST(username string) (expiry int64, id string, ok bool) {
	i := strings.IndexByte(username, ':')
	if i <= 0 || i > maxExpiryDigits {
		return 0, "", false
	}
	digits, id := username[:i], username[i+1:]
	for j := 0; j < len(digits); j++ {
		if digits[j] < '0' || digits[j] > '9' {
			return 0, "", false
		}
	}
	expiry, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || expiry <= 0 {
		return 0, "", false
	}
	if !validUserID(id) {
		return 0, "", false
	}
	return expiry, id, true
}

// validUserID reports whether s is 1..maxUserIDLen bytes of valid UTF-8
// without control characters.
func validUserID(s string) bool {
	if s == "" || len(s) > maxUserIDLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
