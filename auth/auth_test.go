package auth

import (
	"bytes"
	"crypto/hmac"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

const (
	testRealm   = "relay.example"
	secretA     = "first-secret"
	secretB     = "old-secret"
	wrongSecret = "not-configured"
	maxTTL      = 24 * time.Hour
)

var testNow = time.Unix(1_700_000_000, 250_000_000) // fractional on purpose

func fixedNow() time.Time { return testNow }

func newTest(t *testing.T, o Options) *Authenticator {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	a, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func restUser(expiry int64, id string) string {
	return strconv.FormatInt(expiry, 10) + ":" + id
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		wantErr bool
	}{
		{"zero everything", Options{}, false},
		{"users only", Options{Users: map[string]string{"alice": "pw"}}, false},
		{"secret and ttl", Options{Secrets: []string{"s"}, MaxTTL: time.Hour}, false},
		{"empty secret", Options{Secrets: []string{"s", ""}, MaxTTL: time.Hour}, true},
		{"zero ttl with secret", Options{Secrets: []string{"s"}}, true},
		{"negative ttl with secret", Options{Secrets: []string{"s"}, MaxTTL: -time.Second}, true},
		{"zero ttl without secret", Options{Users: map[string]string{"a": "b"}}, false},
		{"empty user name", Options{Users: map[string]string{"": "pw"}}, true},
		{"empty user password", Options{Users: map[string]string{"bob": ""}}, true},
		{"control char user", Options{Users: map[string]string{"b\nob": "pw"}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "pw") {
				t.Fatalf("error leaks a password: %v", err)
			}
		})
	}
}

func TestNewCopiesOptions(t *testing.T) {
	secrets := []string{secretA}
	users := map[string]string{"alice": "pw"}
	a := newTest(t, Options{Secrets: secrets, MaxTTL: maxTTL, Users: users})
	secrets[0] = "mutated"
	users["alice"] = "mutated"
	c, err := a.Mint("u", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Password != RESTPassword(secretA, c.Username) {
		t.Fatal("Authenticator shares the caller's Secrets slice")
	}
	keys, _, _, ok := a.Candidates("alice", testRealm)
	if !ok || !bytes.Equal(keys[0], LongTermKey("alice", testRealm, "pw")) {
		t.Fatal("Authenticator shares the caller's Users map")
	}
}

func TestMintCandidatesRoundTrip(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA, secretB}, MaxTTL: maxTTL})
	tests := []struct {
		name    string
		userID  string
		ttl     time.Duration
		wantTTL int64
	}{
		{"one hour", "alice", time.Hour, 3600},
		{"one second", "bob", time.Second, 1},
		{"sub-second rounds up", "carol", 1500 * time.Millisecond, 2},
		{"clamped to max", "dave", 10 * maxTTL, int64(maxTTL / time.Second)},
		{"exactly max", "erin", maxTTL, int64(maxTTL / time.Second)},
		{"unicode id", "zoë@example", time.Minute, 60},
		{"max length id", strings.Repeat("x", 256), time.Minute, 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := a.Mint(tc.userID, tc.ttl)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if c.TTL != tc.wantTTL {
				t.Fatalf("TTL = %d, want %d", c.TTL, tc.wantTTL)
			}
			if want := restUser(testNow.Unix()+tc.wantTTL, tc.userID); c.Username != want {
				t.Fatalf("Username = %q, want %q", c.Username, want)
			}
			if c.Password != RESTPassword(secretA, c.Username) {
				t.Fatal("password not signed with the first secret")
			}
			keys, id, reason, ok := a.Candidates(c.Username, testRealm)
			if !ok || reason != "" {
				t.Fatalf("Candidates refused: %q", reason)
			}
			if id != tc.userID {
				t.Fatalf("userID = %q, want %q", id, tc.userID)
			}
			if len(keys) != 2 {
				t.Fatalf("got %d keys, want one per secret", len(keys))
			}
			want := LongTermKey(c.Username, testRealm, c.Password)
			if !hmac.Equal(keys[0], want) {
				t.Fatal("first candidate is not the first secret's key")
			}
		})
	}
}

// Cross-check against pion/turn, the reference implementation.
func TestMatchesPion(t *testing.T) {
	a, err := New(Options{Secrets: []string{secretA}, MaxTTL: maxTTL}) // real clock, like pion
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, realm string
		ttl         time.Duration
	}{
		{"alice", "example.org", time.Hour},
		{"a:b", "", time.Minute},
		{"zoë", "realm with spaces", 12 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			username, password, err := turn.GenerateLongTermTURNRESTCredentials(secretA, tc.user, tc.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if got := RESTPassword(secretA, username); got != password {
				t.Fatalf("RESTPassword = %q, pion = %q", got, password)
			}
			wantKey := turn.GenerateAuthKey(username, tc.realm, password)
			if got := LongTermKey(username, tc.realm, password); !bytes.Equal(got, wantKey) {
				t.Fatalf("LongTermKey = %x, pion = %x", got, wantKey)
			}
			keys, id, reason, ok := a.Candidates(username, tc.realm)
			if !ok {
				t.Fatalf("pion credentials refused: %q", reason)
			}
			if id != tc.user {
				t.Fatalf("userID = %q, want %q", id, tc.user)
			}
			if !bytes.Equal(keys[0], wantKey) {
				t.Fatal("candidate key differs from pion's")
			}

			// And the other way round: our minted credentials through pion's key function.
			c, err := a.Mint(strings.ReplaceAll(tc.user, ":", "_"), tc.ttl)
			if err != nil {
				t.Fatal(err)
			}
			keys, _, _, ok = a.Candidates(c.Username, tc.realm)
			if !ok || !bytes.Equal(keys[0], turn.GenerateAuthKey(c.Username, tc.realm, c.Password)) {
				t.Fatal("minted credentials do not match pion's key")
			}
		})
	}
}

func TestCandidatesExpiry(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA}, MaxTTL: maxTTL})
	now := testNow.Unix()
	maxSecs := int64(maxTTL / time.Second)
	tests := []struct {
		name   string
		expiry int64
		want   Reason
	}{
		{"long expired", now - 86400, ReasonExpired},
		{"expired one second ago", now - 1, ReasonExpired},
		{"expires this second", now, ""},
		{"one hour ahead", now + 3600, ""},
		{"exactly max ttl", now + maxSecs, ""},
		{"max ttl plus tolerance", now + maxSecs + 5, ""},
		{"beyond max ttl", now + maxSecs + 6, ReasonTooFarFuture},
		{"far future", now + 10*maxSecs, ReasonTooFarFuture},
		{"max int64", 1<<63 - 1, ReasonTooFarFuture},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := restUser(tc.expiry, "alice")
			keys, id, reason, ok := a.Candidates(u, testRealm)
			if reason != tc.want || ok != (tc.want == "") {
				t.Fatalf("Candidates(%q) = ok %v reason %q, want %q", u, ok, reason, tc.want)
			}
			if !ok && (keys != nil || id != "") {
				t.Fatal("refusal returned keys or a user id")
			}
		})
	}
}

func TestCandidatesRotation(t *testing.T) {
	old := newTest(t, Options{Secrets: []string{secretB}, MaxTTL: maxTTL})
	rotated := newTest(t, Options{Secrets: []string{secretA, secretB}, MaxTTL: maxTTL})
	wrong := newTest(t, Options{Secrets: []string{wrongSecret}, MaxTTL: maxTTL})

	tests := []struct {
		name      string
		minter    *Authenticator
		wantIndex int // index of the matching key in rotated's candidates, -1: none
	}{
		{"minted with old secret", old, 1},
		{"minted with new secret", rotated, 0},
		{"minted with unknown secret", wrong, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.minter.Mint("alice", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			keys, id, _, ok := rotated.Candidates(c.Username, testRealm)
			if !ok || id != "alice" || len(keys) != 2 {
				t.Fatalf("Candidates: ok=%v id=%q keys=%d", ok, id, len(keys))
			}
			if !hmac.Equal(keys[0], LongTermKey(c.Username, testRealm, RESTPassword(secretA, c.Username))) {
				t.Fatal("first candidate is not the first secret's key")
			}
			want := LongTermKey(c.Username, testRealm, c.Password)
			got := -1
			for i, k := range keys {
				if hmac.Equal(k, want) {
					got = i
				}
			}
			if got != tc.wantIndex {
				t.Fatalf("matching key index = %d, want %d", got, tc.wantIndex)
			}
		})
	}
}

func TestCandidatesMalformed(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA}, MaxTTL: maxTTL})
	future := strconv.FormatInt(testNow.Unix()+60, 10)
	tests := []string{
		"",
		"abc",
		":",
		":alice",
		"123:",
		future + ":",
		"-5:x",
		"+5:x",
		"0:x",
		"12a:x",
		" 123:x",
		"0x10:x",
		"1:\x00",
		future + ":ali\x00ce",
		future + ":alice\n",
		future + ":\x7f",
		future + ":\u0085",          // C1 control
		future + ":\xff\xfe",        // invalid UTF-8
		"99999999999999999999:x",    // overflows int64
		"00000000000000000001234:x", // too many digits
		future + ":" + strings.Repeat("x", 257),
		strings.Repeat("9", 10000) + ":x",
	}
	for _, u := range tests {
		name := u
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(strconv.Quote(name), func(t *testing.T) {
			keys, id, reason, ok := a.Candidates(u, testRealm)
			if ok || reason != ReasonMalformed || keys != nil || id != "" {
				t.Fatalf("Candidates(%q) = ok %v reason %q id %q", u, ok, reason, id)
			}
		})
	}
}

func TestCandidatesUserID(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA}, MaxTTL: 100 * 365 * 24 * time.Hour})
	tests := []struct{ username, wantID string }{
		{"1700000000:a:b", "a:b"},
		{"1700000000:alice", "alice"},
		{"1700000000::", ":"},
		{"01700000000:x y", "x y"},
	}
	for _, tc := range tests {
		t.Run(tc.username, func(t *testing.T) {
			_, id, reason, ok := a.Candidates(tc.username, testRealm)
			if !ok || id != tc.wantID {
				t.Fatalf("Candidates(%q) = ok %v id %q reason %q, want id %q", tc.username, ok, id, reason, tc.wantID)
			}
		})
	}
}

func TestCandidatesNoSecrets(t *testing.T) {
	a := newTest(t, Options{Users: map[string]string{"alice": "pw"}})
	if a.HasSecrets() {
		t.Fatal("HasSecrets with no secrets")
	}
	tests := []struct {
		username string
		want     Reason
	}{
		{restUser(testNow.Unix()+60, "alice"), ReasonUnknownUser},
		{"bob", ReasonMalformed},
		{"alice", ""},
	}
	for _, tc := range tests {
		_, _, reason, ok := a.Candidates(tc.username, testRealm)
		if reason != tc.want || ok != (tc.want == "") {
			t.Errorf("Candidates(%q) = ok %v reason %q, want %q", tc.username, ok, reason, tc.want)
		}
	}
	if _, err := a.Mint("alice", time.Hour); err == nil {
		t.Fatal("Mint without secrets succeeded")
	}
}

func TestStaticUsers(t *testing.T) {
	shadow := restUser(testNow.Unix()+60, "bob") // a valid REST username, configured as a static user
	a := newTest(t, Options{
		Secrets: []string{secretA},
		MaxTTL:  maxTTL,
		Users:   map[string]string{"alice": "alice-pw", shadow: "static-pw", "1:expired": "pw2"},
	})
	if !a.HasSecrets() {
		t.Fatal("HasSecrets false")
	}
	tests := []struct {
		name, username, password string
	}{
		{"plain static user", "alice", "alice-pw"},
		{"static shadows REST form", shadow, "static-pw"},
		{"static with expired-looking name", "1:expired", "pw2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, id, reason, ok := a.Candidates(tc.username, testRealm)
			if !ok {
				t.Fatalf("refused: %q", reason)
			}
			if id != tc.username {
				t.Fatalf("userID = %q, want the full name %q", id, tc.username)
			}
			if len(keys) != 1 || !hmac.Equal(keys[0], LongTermKey(tc.username, testRealm, tc.password)) {
				t.Fatal("want exactly the static user's key")
			}
			if !bytes.Equal(keys[0], turn.GenerateAuthKey(tc.username, testRealm, tc.password)) {
				t.Fatal("static key differs from pion's")
			}
		})
	}
	// Lookup is exact: case and whitespace variants are not the static user.
	for _, u := range []string{"Alice", "alice ", " alice"} {
		if _, _, reason, ok := a.Candidates(u, testRealm); ok || reason != ReasonMalformed {
			t.Errorf("Candidates(%q) = ok %v reason %q", u, ok, reason)
		}
	}
}

func TestMintErrors(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA}, MaxTTL: maxTTL})
	tests := []struct {
		name   string
		userID string
		ttl    time.Duration
	}{
		{"zero ttl", "alice", 0},
		{"negative ttl", "alice", -time.Second},
		{"empty id", "", time.Hour},
		{"colon", "a:b", time.Hour},
		{"control char", "a\tb", time.Hour},
		{"nul", "a\x00", time.Hour},
		{"invalid utf8", "\xff", time.Hour},
		{"too long", strings.Repeat("x", 257), time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := a.Mint(tc.userID, tc.ttl); err == nil {
				t.Fatalf("Mint succeeded: %+v", c)
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	s1, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if s1 == s2 {
		t.Fatal("two secrets are equal")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s1)
	if err != nil || len(raw) != 32 {
		t.Fatalf("secret %q: decoded %d bytes, err %v", s1, len(raw), err)
	}
	if _, err := New(Options{Secrets: []string{s1}, MaxTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
}

func TestReasonValues(t *testing.T) {
	want := map[Reason]string{
		ReasonMalformed:    "malformed",
		ReasonExpired:      "expired",
		ReasonTooFarFuture: "too_far_future",
		ReasonUnknownUser:  "unknown_user",
		ReasonBadPassword:  "bad_password",
	}
	for r, s := range want {
		if string(r) != s {
			t.Errorf("%q != %q", r, s)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{secretA, secretB}, MaxTTL: maxTTL, Users: map[string]string{"s": "p"}})
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				c, err := a.Mint("u"+strconv.Itoa(i), time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if _, _, _, ok := a.Candidates(c.Username, testRealm); !ok {
					t.Error("refused")
					return
				}
				a.Candidates("s", testRealm)
			}
		}()
	}
	for g := 0; g < 8; g++ {
		<-done
	}
}

// BenchmarkVerify measures checking a request's credentials as the gate does: the
// candidate keys for a TURN REST username (HMAC-SHA1, then MD5) with two secrets.
func BenchmarkVerify(b *testing.B) {
	a, err := New(Options{Secrets: []string{"first-secret-0123456789", "second-secret-0123456789"}, MaxTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	c, err := a.Mint("bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, _, ok := a.Candidates(c.Username, "relay"); !ok {
			b.Fatal("refused")
		}
	}
}

// Admit decides exactly as Candidates does, without deriving keys.
func TestAdmitAgreesWithCandidates(t *testing.T) {
	a := newTest(t, Options{Secrets: []string{"s1", "s2"}, MaxTTL: time.Hour, Users: map[string]string{"static": "pw"}})
	for _, u := range []string{
		"static", "nobody", "",
		strconv.FormatInt(testNow.Add(time.Minute).Unix(), 10) + ":alice",
		strconv.FormatInt(testNow.Add(-time.Minute).Unix(), 10) + ":alice",
		strconv.FormatInt(testNow.Add(3*time.Hour).Unix(), 10) + ":alice",
		"12x:alice", ":alice", strconv.FormatInt(testNow.Unix(), 10) + ":",
	} {
		keys, id, reason, ok := a.Candidates(u, testRealm)
		aid, areason, aok := a.Admit(u)
		if aok != ok || aid != id || areason != reason || (ok && len(keys) == 0) {
			t.Errorf("%q: Admit = (%q, %q, %v), Candidates = (%d keys, %q, %q, %v)", u, aid, areason, aok, len(keys), id, reason, ok)
		}
	}
}
