package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
)

// loadConfig reads path, or returns the embedded defaults when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// newLogger logs at level, which reload may change.
func newLogger(c config.Log, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func newAuthenticator(c *config.Config) (*auth.Authenticator, error) {
	return auth.New(auth.Options{Secrets: c.Auth.Secrets, MaxTTL: c.Auth.MaxTTL, Users: c.Auth.Users})
}

// requireSecret refuses a config without [auth] secrets, for relay -require-secret (the
// systemd unit) and relay check -config: a service must not sign credentials with a
// secret that dies with the process, which is what relay does for `go run`. One line,
// because it is what the journal shows; exit status exitConfig, so that systemd does not
// restart relay in a loop over a file only the operator can fix.
func requireSecret(cfg *config.Config) error {
	if len(cfg.Auth.Secrets) > 0 {
		return nil
	}
	return &exitError{code: exitConfig, err: fmt.Errorf(
		"no [auth] secrets in %s: put secrets = [\"<output of: openssl rand -hex 32>\"] under [auth], then start relay again", cfg.Source)}
}
