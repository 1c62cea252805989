package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/relayproject/relay/internal/listen"
)

// Endpoint is the HTTP listener that serves /metrics, apart from any public listener so
// that it can stay on loopback or a private interface.
type Endpoint struct {
	srv *http.Server
	ln  net.Listener
}

// debugRoutes adds profiling routes in builds with the pprof tag (see pprof.go).
var debugRoutes func(*http.ServeMux)

// Listen binds addr and starts serving m at /metrics.
func Listen(addr string, m *Metrics) (*Endpoint, error) {
	ln, err := net.Listen(listen.Network("tcp", addr), addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if debugRoutes != nil {
		debugRoutes(mux)
	}
	e := &Endpoint{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}}
	go func() {
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	return e, nil
}

// Addr is the bound address (useful with port 0).
func (e *Endpoint) Addr() net.Addr { return e.ln.Addr() }

// Shutdown stops serving, waiting for in-flight scrapes until ctx ends.
func (e *Endpoint) Shutdown(ctx context.Context) error { return e.srv.Shutdown(ctx) }
