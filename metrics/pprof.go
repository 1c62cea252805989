//go:build pprof

package metrics

import (
	"net/http"
	"net/http/pprof"
)

// Built with -tags pprof, the metrics listener also serves /debug/pprof/ for profiling
// the server under load (bench/README.md). Release builds leave it out.
func init() {
	debugRoutes = func(mux *http.ServeMux) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}
