package main

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/config"
)

// newState makes the operator's state ([admin] state_dir, or the fleet's Redis) and
// hands it to the TURN server, before it starts.
func (d *daemon) newState() error {
	cfg := d.cfg
	var store admin.Store
	var err error
	switch {
	case cfg.Cluster.Enabled():
		// A fleet shares revocations and usage; state_dir is not read then.
		store, err = cluster.OpenStateStore(&cfg.Cluster, d.log)
	default:
		store, err = admin.NewFileStore(cfg.Admin.StateDir)
	}
	if err != nil {
		return err
	}
	d.state = admin.NewState(admin.Options{Store: store, Budget: cfg.Limits.UserBytesPerDay, MaxTTL: cfg.Auth.MaxTTL, Logger: d.log})
	d.turn.SetControl(d.state)
	d.state.Attach(d.turn)
	return nil
}

// startAdmin starts the state's sync and the admin API ([admin] listen).
func (d *daemon) startAdmin() error {
	d.state.Start()
	cfg := d.cfg
	if cfg.Admin.Listen == "" {
		return nil
	}
	api, err := admin.Listen(admin.ServerOptions{Listen: cfg.Admin.Listen, Tokens: cfg.Admin.Tokens,
		State: d.state, TURN: d.turn, Logger: d.log})
	if err != nil {
		if cfg.Admin.Listen == config.DefaultAdminListen && errors.Is(err, syscall.EADDRINUSE) {
			// The default port, taken (another relay on this host): TURN matters more
			// than the API. An address the operator chose is required (below).
			d.log.Warn("admin API off: its default address is in use (another relay on this host?); set [admin] listen to another address, or \"\"",
				"addr", cfg.Admin.Listen)
			return nil
		}
		return err
	}
	d.adminAPI = api
	d.log.Info("listening", "transport", "admin", "addr", api.Addr().String(), "serves", "admin API /v1/")
	return nil
}

// reloadAdmin applies a reload's [admin] tokens and byte budget; it returns the
// [admin] keys that need a restart.
func (d *daemon) reloadAdmin(cfg *config.Config) []string {
	d.state.SetBudget(cfg.Limits.UserBytesPerDay)
	d.state.SetMaxTTL(cfg.Auth.MaxTTL)
	if d.adminAPI != nil {
		d.adminAPI.SetTokens(cfg.Admin.Tokens)
	}
	var restart []string
	if cfg.Admin.Listen != d.cfg.Admin.Listen {
		restart = append(restart, "admin.listen")
	}
	if cfg.Admin.StateDir != d.cfg.Admin.StateDir {
		restart = append(restart, "admin.state_dir")
	}
	return restart
}

// stopAdmin closes the admin API, then the state (its last counts to the store); the
// TURN server has closed already, so every allocation's end is counted.
func (d *daemon) stopAdmin(ctx context.Context) {
	if d.adminAPI != nil {
		_ = d.adminAPI.Close(ctx)
	}
	if d.state != nil {
		if err := d.state.Close(); err != nil {
			d.log.Warn("admin: saving state", "err", err)
		}
	}
}

// revokeSession is signaling's bind_credentials hook: the peer userID left, so the
// credentials issued to it (all expiring by until) are revoked.
func (d *daemon) revokeSession(userID string, until time.Time) {
	if _, err := d.state.Revoke(userID, "", admin.RevokedSessionEnded, until); err != nil {
		d.log.Warn("bind_credentials: revoking a session's credentials failed", "user", userID, "err", err)
	}
}
