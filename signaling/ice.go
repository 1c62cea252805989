package signaling

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// iceServer is one RTCIceServer dictionary.
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// serveICE hands out fresh time-limited TURN credentials: as an RTCConfiguration
// fragment, or with ?service=turn in the TURN REST API draft's form. The user id in
// them is random per call, the ?username= of a caller with a valid API token, or with
// bind_credentials the id of the live peer named by ?peer= and ?token= (bind.go).
func (s *Server) serveICE(w http.ResponseWriter, r *http.Request) {
	deny := func(reason string, status int, msg string) {
		s.metrics.ICERequestsDenied.WithLabelValues(reason).Inc()
		jsonError(w, status, msg)
	}
	if ok, wait := s.ice.allow(clientSource(r), time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		deny("rate", http.StatusTooManyRequests, "too many requests from your address; retry later")
		return
	}
	// Only a caller with a valid token (a backend) may name the user: the user id is
	// what user_allocations counts, so an anonymous caller naming one could fill that
	// user's quota with credentials minted for it and lock the user out.
	trusted := false
	if len(s.conf().APITokens) > 0 {
		if !s.tokenOK(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="relay"`)
			deny("token", http.StatusUnauthorized, "missing or invalid API token: send Authorization: Bearer <token>")
			return
		}
		trusted = true
	}
	q := r.URL.Query()
	service := q.Get("service")
	if service != "" && service != "turn" {
		deny("bad_request", http.StatusBadRequest, `unsupported service: only "turn"`)
		return
	}
	user := "web-" + randomHex(6) // a fresh id per call: no two callers share a quota
	name := q.Get("username")
	bound := s.conf().BindCredentials && !(trusted && name != "")
	switch {
	case bound:
		// Only a peer connected here, proven by its token, gets credentials, in its
		// own name; they are revoked when it leaves (bind.go).
		user = q.Get("peer")
		if user == "" || q.Get("token") == "" {
			deny("no_peer", http.StatusForbidden, "credentials are bound to a signaling session here: ask with ?peer=ID&token=TOKEN of a PeerJS peer connected to this server")
			return
		}
		if !bindableID(user) || !s.livePeer(user, q.Get("token")) {
			deny("no_peer", http.StatusForbidden, "no PeerJS peer with that id and token is connected to this server")
			return
		}
		if s.bind.full(user) {
			jsonError(w, http.StatusServiceUnavailable, "too many sessions hold credentials; retry later")
			return
		}
	case trusted && name != "":
		if !validUserID(name) {
			deny("bad_request", http.StatusBadRequest, "username must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
			return
		}
		user = name
	}
	creds, err := s.mint(user, s.conf().CredentialTTL)
	if err != nil {
		s.log.Error("minting TURN credentials", "err", err)
		jsonError(w, http.StatusInternalServerError, "cannot mint credentials")
		return
	}
	if bound {
		s.issued(user, q.Get("token"), time.Now().Add(time.Duration(creds.TTL)*time.Second))
	}
	s.metrics.ICECredentials.Inc()
	stun, turn := s.uris(s.host(r))
	if service == "turn" {
		writeJSON(w, http.StatusOK, struct {
			Username string   `json:"username"`
			Password string   `json:"password"`
			TTL      int64    `json:"ttl"`
			URIs     []string `json:"uris"`
		}{creds.Username, creds.Password, creds.TTL, turn})
		return
	}
	servers := []iceServer{}
	if len(stun) > 0 {
		servers = append(servers, iceServer{URLs: stun})
	}
	if len(turn) > 0 {
		servers = append(servers, iceServer{URLs: turn, Username: creds.Username, Credential: creds.Password})
	}
	writeJSON(w, http.StatusOK, struct {
		ICEServers []iceServer `json:"iceServers"`
		TTL        int64       `json:"ttl"`
	}{servers, creds.TTL})
}

func (s *Server) tokenOK(header string) bool {
	// The scheme is case-insensitive and one or more spaces precede the token (RFC 7235
	// section 2.1), so "bearer  t" is as good as "Bearer t".
	scheme, tok, ok := strings.Cut(header, " ")
	tok = strings.TrimLeft(tok, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	match := 0
	for _, t := range s.conf().APITokens {
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return match == 1
}

// host is the name browsers should use in stun:/turn: URLs: public_host, else the host
// the request was addressed to.
func (s *Server) host(r *http.Request) string {
	if s.conf().PublicHost != "" {
		return s.conf().PublicHost
	}
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "" || !validHost(h) {
		if ap := clientIP(r); ap.IsValid() {
			// No usable Host header: the address the request came in on is the next best.
			if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
				if host, _, err := net.SplitHostPort(la.String()); err == nil {
					return host
				}
			}
		}
		return "localhost"
	}
	return h
}

func validHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == ':':
		default:
			return false
		}
	}
	return true
}

func validUserID(u string) bool {
	if len(u) > 64 {
		return false
	}
	for _, c := range u {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return u != ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
