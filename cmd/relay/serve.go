package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/portmux"
	"github.com/relayproject/relay/internal/sdnotify"
	"github.com/relayproject/relay/metrics"
	"github.com/relayproject/relay/relay"
	"github.com/relayproject/relay/signaling"
)

// daemon is a running relay: the parts serve assembles and what reload swaps.
type daemon struct {
	path      string
	cfg       *config.Config // as started
	level     *slog.LevelVar
	log       *slog.Logger
	generated string // the secret made at start when the config has none
	auth      atomic.Pointer[auth.Authenticator]
	metrics   *metrics.Metrics
	turn      *relay.Server
	sig       *signaling.Server
	fleet     *cluster.Registry // nil without [cluster] redis
	fleetDB   io.Closer
	draining  atomic.Bool                    // announced to the fleet: ICE answers leave this node
	cluster   atomic.Pointer[config.Cluster] // as last loaded: region and ice_nodes change live
	ep        *metrics.Endpoint
	shared    *portmux.Mux  // the port TURN and signaling share, if any
	certs     *certSource   // certificates by ACME; nil without
	state     *admin.State  // revocations, usage, refusals, events (operate.go)
	adminAPI  *admin.Server // nil without [admin] listen

	// -require-secret: a config without [auth] secrets is refused, at start and on reload.
	needSecret bool
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	configPath := fs.String("config", "", "TOML config file (see config.example.toml); empty: embedded defaults, which work on a laptop")
	showVersion := fs.Bool("version", false, "print the version and exit")
	needSecret := fs.Bool("require-secret", false, "refuse to start without [auth] secrets instead of generating one for the run (the systemd unit passes it)")
	if err := parseFlags(fs, args, usage, stdout, stderr); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionString())
		return nil
	}
	// Signals are caught from the start, so one that arrives while starting up is
	// handled as a request to stop, never by the default action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if *needSecret {
		if err := requireSecret(cfg); err != nil {
			return err
		}
	}
	d := &daemon{path: *configPath, cfg: cfg, level: new(slog.LevelVar), needSecret: *needSecret}
	d.level.Set(cfg.Log.SlogLevel())
	d.log = newLogger(cfg.Log, d.level)
	procs := setProcs()
	for _, w := range cfg.Warnings() {
		d.log.Warn("config: " + w)
	}
	if err := d.start(); err != nil {
		d.stop()
		return err
	}
	_ = sdnotify.Ready()
	d.log.Info("relay started", "config", cfg.Source, "realm", cfg.Realm, "gomaxprocs", procs)
	stopWatchdog := d.watchdog()
	defer stopWatchdog()

	for s := range sigs {
		switch s {
		case syscall.SIGHUP:
			d.reload()
		case syscall.SIGTERM:
			d.drain(sigs)
			d.stop()
			return nil
		default: // SIGINT: a person at a terminal wants it gone now
			d.stop()
			return nil
		}
	}
	return nil
}

func (d *daemon) start() error {
	cfg := d.cfg
	if len(cfg.Auth.Secrets) == 0 {
		secret, err := auth.GenerateSecret()
		if err != nil {
			return err
		}
		d.generated = secret
		cfg.Auth.Secrets = []string{secret}
		// Printed once, to the terminal, never into the log stream.
		fmt.Fprintf(os.Stderr, "WARNING: no [auth] secrets configured; generated a shared secret for this run only:\n\n    %s\n\n"+
			"Credentials signed with it stop working when relay restarts. Put a long random secret in [auth] secrets for real use.\n", secret)
	}
	a, err := newAuthenticator(cfg)
	if err != nil {
		return err
	}
	d.auth.Store(a)
	if d.generated != "" {
		printTryIt(cfg, a)
	}
	ver, rev := buildVersion()
	d.metrics = metrics.New(ver, rev)

	var turnListeners map[string]net.Listener
	if d.certs, err = newCertSource(cfg, d.log); err != nil {
		return err
	}
	sigCert := func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return d.sig.GetCertificate(h) }
	if d.shared, turnListeners, err = openSharedPort(cfg, sigCert, d.certs.protos(), d); err != nil {
		return err
	}
	if d.turn, err = relay.New(relay.Options{Config: cfg, Auth: a, Metrics: d.metrics, Logger: d.log, Listeners: turnListeners,
		GetCertificate: d.certs.getCert()}); err != nil {
		return err
	}
	if err := d.newState(); err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		if d.ep, err = metrics.Listen(cfg.Metrics.Listen, d.metrics); err != nil {
			return fmt.Errorf("metrics.listen %q: %w", cfg.Metrics.Listen, err)
		}
		d.log.Info("listening", "transport", "http", "addr", d.ep.Addr().String(), "serves", "/metrics")
	}
	if err := d.turn.Start(); err != nil {
		return err
	}
	if err := d.startAdmin(); err != nil {
		return err
	}
	if cfg.Signal.Listen != "" && cfg.Cluster.Enabled() {
		if d.fleet, d.fleetDB, err = openFleet(cfg, d.log); err != nil {
			return err
		}
		d.metrics.Registry.MustRegister(d.fleet.Collectors()...)
		d.cluster.Store(&cfg.Cluster)
		d.fleet.SetSelf(announcement(cfg, d.turn, &d.draining, &d.cluster))
	}
	if cfg.Signal.Listen != "" {
		var ln net.Listener
		if d.shared != nil {
			ln = d.shared.HTTP()
		}
		if d.sig, err = startSignal(cfg, d.mint, d.revokeSession, d.metrics, d.turn, d.fleet, &d.cluster, d.log, ln, d.certs); err != nil {
			return err
		}
	}
	if d.shared != nil {
		d.shared.Serve() // both sides are up, and signaling has its certificate
	}
	if err := d.certs.start(cfg, d.log); err != nil {
		return err
	}
	d.log.Info("version", "version", ver, "revision", rev)
	return nil
}

// mint makes credentials with the authenticator in force (reload swaps it).
func (d *daemon) mint(userID string, ttl time.Duration) (auth.Credentials, error) {
	return d.auth.Load().Mint(userID, ttl)
}

// reload re-reads the config file and applies what can change without a restart. A
// config that does not load, or names a certificate that does not, changes nothing.
func (d *daemon) reload() {
	_ = sdnotify.Reloading()
	defer func() { _ = sdnotify.Ready() }()
	fail := func(err error) {
		d.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure).Inc()
		d.log.Error("reload: keeping the running configuration", "err", err)
	}
	cfg, err := loadConfig(d.path)
	if err != nil {
		fail(err)
		return
	}
	if d.needSecret {
		if err := requireSecret(cfg); err != nil {
			fail(err)
			return
		}
	}
	if len(cfg.Auth.Secrets) == 0 && d.generated != "" {
		cfg.Auth.Secrets = []string{d.generated} // credentials already handed out stay valid
	}
	a, err := newAuthenticator(cfg)
	if err != nil {
		fail(err)
		return
	}
	// loadConfig has checked the certificates in use (config.Load), so a bad one leaves
	// everything as it was.
	restart, err := d.turn.Reload(cfg, a)
	if err != nil {
		fail(err)
		return
	}
	if d.sig != nil {
		more, err := d.sig.Reload(cfg.Signal)
		if err != nil {
			fail(err)
			return
		}
		restart = append(restart, more...)
	} else if cfg.Signal.Listen != "" {
		restart = append(restart, "signal.listen")
	}
	if cfg.Metrics.Listen != d.cfg.Metrics.Listen {
		restart = append(restart, "metrics.listen")
	}
	restart = append(restart, clusterRestart(&d.cfg.Cluster, &cfg.Cluster)...)
	restart = append(restart, tlsRestart(&d.cfg.TLS, &cfg.TLS)...)
	restart = append(restart, d.reloadAdmin(cfg)...)
	if d.fleet != nil {
		c := cfg.Cluster
		d.cluster.Store(&c)
		d.fleet.SetRegion(c.Region)
		d.fleet.Announce() // the new region reaches the fleet now
	}
	if cfg.Log.Format != d.cfg.Log.Format {
		restart = append(restart, "log.format")
	}
	d.auth.Store(a)
	d.level.Set(cfg.Log.SlogLevel())
	for _, w := range cfg.Warnings() {
		d.log.Warn("config: " + w)
	}
	d.metrics.ConfigReloads.WithLabelValues(metrics.ReloadSuccess).Inc()
	if len(restart) > 0 {
		d.log.Warn("config reloaded; these changes need a restart to take effect", "keys", restart)
	} else {
		d.log.Info("config reloaded", "config", cfg.Source)
	}
}

// drain stops new allocations and waits for open ones to end, up to drain_timeout; a
// second SIGTERM or SIGINT ends the wait at once.
func (d *daemon) drain(sigs <-chan os.Signal) {
	_ = sdnotify.Stopping()
	d.turn.Drain()
	d.draining.Store(true)
	if d.fleet != nil {
		d.fleet.Announce() // the fleet's ICE answers leave this node now
	}
	n := d.turn.AllocationCount()
	if n == 0 {
		return
	}
	timeout := d.cfg.TURN.DrainTimeout
	d.log.Info("draining: no new allocations; waiting for open ones to end", "allocations", n, "timeout", timeout.String())
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if d.turn.AllocationCount() == 0 {
				d.log.Info("drained: every allocation ended")
				return
			}
		case <-deadline:
			d.log.Info("drain timeout: closing the remaining allocations", "allocations", d.turn.AllocationCount())
			return
		case s := <-sigs:
			if s == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("second signal: stopping now", "signal", s.String())
			return
		}
	}
}

// stop closes everything that was started.
func (d *daemon) stop() {
	_ = sdnotify.Stopping()
	if d.log == nil {
		return
	}
	d.log.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if d.sig != nil {
		_ = d.sig.Close(ctx)
	}
	if d.fleet != nil { // after signaling: its peers' leases are released, not left to expire
		d.fleet.Close()
		_ = d.fleetDB.Close()
	}
	if d.turn != nil {
		_ = d.turn.Close()
	}
	if d.shared != nil {
		_ = d.shared.Close()
	}
	d.certs.stop(ctx)
	d.stopAdmin(ctx)
	if d.ep != nil {
		_ = d.ep.Shutdown(ctx)
	}
	d.log.Info("stopped")
}

// watchdog pings systemd's watchdog at half its interval when WatchdogSec is set.
func (d *daemon) watchdog() (stop func()) {
	every, ok := sdnotify.WatchdogInterval()
	if !ok {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = sdnotify.Watchdog()
			}
		}
	}()
	return func() { close(done) }
}

// printTryIt shows a newcomer an iceServers entry that works against this run.
func printTryIt(cfg *config.Config, a *auth.Authenticator) {
	c, err := a.Mint("demo", time.Hour)
	if err != nil {
		return
	}
	host := uriHost(cfg)
	b, err := json.Marshal(struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	}{relay.TURNURIs(cfg, host), c.Username, c.Password})
	if err != nil {
		return
	}
	fmt.Fprintf(os.Stderr, "\nA browser can use it for the next hour (RTCPeerConnection iceServers):\n\n    %s\n\n", b)
}

// setProcs gives Go half the CPUs (at least one) unless GOMAXPROCS says otherwise. Most
// of the work of relaying is the kernel's (sending and receiving datagrams), which needs
// CPUs of its own; and with a datagram or two per wake-up, Go's scheduler waking idle
// processors for each one costs more than the parallelism gives (bench/README.md has
// the measurements). It returns the setting in effect.
func setProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := max(1, runtime.GOMAXPROCS(0)/2)
	runtime.GOMAXPROCS(n)
	return n
}
