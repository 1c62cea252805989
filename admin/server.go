package admin

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayproject/relay/internal/listen"
	"github.com/relayproject/relay/relay"
)

// TURN is what the API needs of the TURN server (relay.Server).
type TURN interface {
	Allocations(userID string) []relay.AllocationInfo
	EndAllocation(id, reason string) bool
	Gone(id string) bool
}

// ServerOptions configures the admin API.
type ServerOptions struct {
	Listen string   // [admin] listen
	Tokens []string // [admin] tokens; empty: no token (config allows that on loopback only)
	State  *State
	TURN   TURN
	Logger *slog.Logger
}

// Server is the admin HTTP API (README, "Operating it").
type Server struct {
	state  *State
	turn   TURN
	log    *slog.Logger
	tokens atomic.Pointer[[]string]
	ln     net.Listener
	http   *http.Server
	cancel context.CancelFunc
	served sync.WaitGroup

	refusedMu   sync.Mutex
	refusedLast time.Time // a refused token is logged at most every refusedLogEvery
	refusedHeld int
}

// Limits of the API.
const (
	maxBodyBytes    = 4 << 10
	writeTimeout    = 30 * time.Second
	eventPing       = 15 * time.Second // a comment line keeps proxies and idle timers from closing /v1/events
	eventWrite      = 10 * time.Second // a reader that takes longer to take one write is gone
	endWait         = 2 * time.Second  // DELETE /v1/allocations/{id} waits this long for pion to delete it
	refusedLogEvery = 5 * time.Second
)

// Listen starts the admin API on o.Listen.
func Listen(o ServerOptions) (*Server, error) {
	if o.State == nil || o.TURN == nil {
		return nil, errors.New("admin: ServerOptions needs State and TURN")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ln, err := net.Listen(listen.Network("tcp", o.Listen), o.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %q: %w", o.Listen, err)
	}
	s := &Server{state: o.State, turn: o.TURN, log: o.Logger, ln: ln}
	s.SetTokens(o.Tokens)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// Handlers set their own write deadlines: /v1/events stays open.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin API stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// SetTokens replaces the accepted tokens (a reload).
func (s *Server) SetTokens(t []string) {
	t = slices.Clone(t)
	s.tokens.Store(&t)
}

// Close ends every request (event streams included) and stops listening.
func (s *Server) Close(ctx context.Context) error {
	s.cancel()
	err := s.http.Shutdown(ctx)
	s.served.Wait()
	return err
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	path := r.URL.Path
	switch {
	case path == "/v1/allocations":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.listAllocations})
	case strings.HasPrefix(path, "/v1/allocations/"):
		s.route(w, r, map[string]http.HandlerFunc{http.MethodDelete: s.endAllocation})
	case path == "/v1/events":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.serveEvents})
	case path == "/v1/revocations":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.listRevocations, http.MethodPost: s.revoke})
	case strings.HasPrefix(path, "/v1/revocations/"):
		s.route(w, r, map[string]http.HandlerFunc{http.MethodDelete: s.unrevoke})
	case path == "/v1/auth-failures":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.listFailures})
	case path == "/v1/usage":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.usage})
	default:
		jsonError(w, http.StatusNotFound, "no such route: see GET /v1/allocations, /v1/events, /v1/revocations, /v1/auth-failures, /v1/usage")
	}
}

// route calls the handler of r's method, or answers 405.
func (s *Server) route(w http.ResponseWriter, r *http.Request, byMethod map[string]http.HandlerFunc) {
	h, ok := byMethod[r.Method]
	if !ok {
		methods := make([]string, 0, len(byMethod))
		for m := range byMethod {
			methods = append(methods, m)
		}
		slices.Sort(methods)
		w.Header().Set("Allow", strings.Join(methods, ", "))
		jsonError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here: use "+strings.Join(methods, " or "))
		return
	}
	if r.URL.Path != "/v1/events" {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	h(w, r)
}

// allowed checks the caller: a valid bearer token when tokens are configured; never a
// web page (a browser on the operator's desktop can be made to send requests to
// 127.0.0.1 by any site it visits, and a name rebound to 127.0.0.1 passes for a
// same-origin one); JSON bodies only (an HTML form cannot send one).
func (s *Server) allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		jsonError(w, http.StatusForbidden, "the admin API does not serve web pages (a request with Origin): use relay admin, curl or a backend")
		return false
	}
	tokens := *s.tokens.Load()
	if len(tokens) == 0 {
		if !loopbackHost(r.Host) {
			jsonError(w, http.StatusForbidden, "without admin.tokens the admin API answers requests for 127.0.0.1, [::1] or localhost only")
			return false
		}
	} else if !tokenOK(r.Header.Get("Authorization"), tokens) {
		s.logRefused(r)
		w.Header().Set("WWW-Authenticate", `Bearer realm="relay admin"`)
		jsonError(w, http.StatusUnauthorized, "missing or invalid admin token: send Authorization: Bearer <one of admin.tokens>")
		return false
	}
	if r.Method == http.MethodPost {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/json") {
			jsonError(w, http.StatusUnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
			return false
		}
	}
	return true
}

// logRefused logs a request with a bad token, without the token, at most every
// refusedLogEvery.
func (s *Server) logRefused(r *http.Request) {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	if time.Since(s.refusedLast) < refusedLogEvery {
		s.refusedHeld++
		return
	}
	s.log.Warn("admin API: refused a request without a valid token", "remote", r.RemoteAddr,
		"path", r.URL.Path, "refused_before_not_logged", s.refusedHeld)
	s.refusedLast, s.refusedHeld = time.Now(), 0
}

// tokenOK checks "Bearer <token>" against every token in constant time.
func tokenOK(header string, tokens []string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	tok = strings.TrimLeft(tok, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	match := 0
	for _, t := range tokens {
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return match == 1
}

// loopbackHost reports whether a Host header names this machine's loopback.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (s *Server) listAllocations(w http.ResponseWriter, r *http.Request) {
	list := s.turn.Allocations(r.URL.Query().Get("user"))
	if list == nil {
		list = []relay.AllocationInfo{} // [], not null
	}
	slices.SortFunc(list, func(a, b relay.AllocationInfo) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) endAllocation(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/allocations/")
	if id == "" || !s.turn.EndAllocation(id, relay.EndAdmin) {
		jsonError(w, http.StatusNotFound, fmt.Sprintf("no allocation %q on this node (GET /v1/allocations lists them)", id))
		return
	}
	// pion deletes it once its relay socket is closed: answer when it has, so that the
	// client's next request is sure to get 437.
	deadline := time.Now().Add(endWait)
	for !s.turn.Gone(id) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.log.Info("admin: allocation ended", "id", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "ended": true})
}

// revokeRequest is the body of POST /v1/revocations.
type revokeRequest struct {
	User     string `json:"user"`
	Username string `json:"username"`
}

// RevokeResult answers POST /v1/revocations.
type RevokeResult struct {
	Revocation
	// AllocationsEnded counts this node's; other nodes end theirs within a second.
	AllocationsEnded int `json:"allocations_ended"`
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		jsonError(w, http.StatusBadRequest, `body must be {"user": "ID"} or {"username": "<expiry>:<id>"}: `+err.Error())
		return
	}
	rev, ended, err := s.state.revoke(req.User, req.Username, RevokedByAdmin, time.Time{})
	switch {
	case IsBadRequest(err):
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, ErrFull):
		jsonError(w, http.StatusInsufficientStorage, fmt.Sprintf("%d revocations are held already: lift some (DELETE /v1/revocations/{user}) or wait for them to lapse", MaxRevocations))
		return
	case err != nil:
		s.log.Error("admin: storing a revocation", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "the revocation could not be stored: "+err.Error())
		return
	}
	s.log.Info("admin: revoked", "user", rev.User, "username", rev.Username, "until", rev.Until, "allocations_ended", ended, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, RevokeResult{Revocation: rev, AllocationsEnded: ended})
}

func (s *Server) listRevocations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.state.Revocations())
}

func (s *Server) unrevoke(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/v1/revocations/")
	found, err := s.state.Unrevoke(key)
	switch {
	case err != nil:
		s.log.Error("admin: lifting a revocation", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "the revocation could not be lifted: "+err.Error())
	case !found:
		jsonError(w, http.StatusNotFound, fmt.Sprintf("%q is not revoked", key))
	default:
		s.log.Info("admin: revocation lifted", "key", key, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]any{"lifted": key})
	}
}

func (s *Server) listFailures(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.state.Failures(r.URL.Query().Get("user")))
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	rep, err := s.state.Usage(r.URL.Query().Get("user"))
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, "reading usage from the state store: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// serveEvents streams events as server-sent events until the client goes, the server
// closes, or the client falls maxEventOutboxBytes behind.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rd := s.state.events.subscribe()
	if rd == nil {
		jsonError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d event streams are open already", maxEventReaders))
		return
	}
	defer s.state.events.unsubscribe(rd)
	rc := http.NewResponseController(w)
	rd.setOnDrop(func() { _ = rc.SetWriteDeadline(time.Now()) })
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventWrite))
		_, err := w.Write(b)
		return err == nil
	}
	if !write([]byte(": relay admin events\n\n")) || rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(eventPing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if !write([]byte(": ping\n\n")) || rc.Flush() != nil {
				return
			}
		case <-rd.wake:
			msgs, dropped := rd.take()
			if dropped {
				s.log.Info("admin API: dropped an event stream that fell behind", "remote", r.RemoteAddr)
				return
			}
			for _, m := range msgs {
				if !write(m) {
					return
				}
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
