package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/metrics"
	"github.com/relayproject/relay/relay"
	"github.com/relayproject/relay/signaling"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	configPath := fs.String("config", "", "TOML config file (see config.example.toml); empty: embedded defaults, which work on a laptop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}

	generated := len(cfg.Auth.Secrets) == 0
	if generated {
		secret, err := auth.GenerateSecret()
		if err != nil {
			return err
		}
		cfg.Auth.Secrets = []string{secret}
		// Printed once, to the terminal, never into the log stream.
		fmt.Fprintf(os.Stderr, "WARNING: no [auth] secrets configured; generated a shared secret for this run only:\n\n    %s\n\n"+
			"Credentials signed with it stop working when relay restarts. Put a long random secret in [auth] secrets for real use.\n", secret)
	}
	a, err := newAuthenticator(cfg)
	if err != nil {
		return err
	}
	if generated {
		printTryIt(cfg, a)
	}
	ver, rev := buildVersion()
	m := metrics.New(ver, rev)

	srv, err := relay.New(relay.Options{Config: cfg, Auth: a, Metrics: m, Logger: log})
	if err != nil {
		return err
	}
	var ep *metrics.Endpoint
	if cfg.Metrics.Listen != "" {
		if ep, err = metrics.Listen(cfg.Metrics.Listen, m); err != nil {
			return fmt.Errorf("metrics.listen %q: %w", cfg.Metrics.Listen, err)
		}
		log.Info("listening", "transport", "http", "addr", ep.Addr().String(), "serves", "/metrics")
	}
	if err := srv.Start(); err != nil {
		if ep != nil {
			_ = ep.Shutdown(context.Background())
		}
		return err
	}
	var sig *signaling.Server
	if cfg.Signal.Listen != "" {
		if sig, err = startSignal(cfg, a, m, srv, log); err != nil {
			_ = srv.Close()
			if ep != nil {
				_ = ep.Shutdown(context.Background())
			}
			return err
		}
	}
	log.Info("relay started", "version", ver, "config", cfg.Source, "realm", cfg.Realm)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	stop() // a second signal now ends the process the default way
	log.Info("shutting down")
	if sig != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = sig.Close(sctx)
		cancel()
	}
	err = srv.Close()
	if ep != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = ep.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return err
}

// printTryIt shows a newcomer an iceServers entry that works against this run.
func printTryIt(cfg *config.Config, a *auth.Authenticator) {
	c, err := a.Mint("demo", time.Hour)
	if err != nil {
		return
	}
	host := relay.AdvertisedHost(cfg)
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
