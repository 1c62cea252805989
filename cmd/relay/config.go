package main

import (
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
