package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/config"
)

// TestAdminDefaultPortTaken: the admin API's default address, taken (a second relay on
// the host), leaves the API off with a warning and TURN running; an address the operator
// chose that is taken stops relay, naming admin.listen.
func TestAdminDefaultPortTaken(t *testing.T) {
	// Hold the default port; if something else holds it already, so much the better.
	if l, err := net.Listen("tcp", config.DefaultAdminListen); err == nil {
		defer l.Close()
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	newDaemon := func(listen string) *daemon {
		cfg := config.Default()
		cfg.Admin.Listen = listen
		d := &daemon{cfg: cfg, log: slog.New(slog.NewTextHandler(&logs, nil))}
		d.state = admin.NewState(admin.Options{Logger: d.log})
		t.Cleanup(func() { d.stopAdmin(context.Background()) })
		return d
	}
	d := newDaemon(config.DefaultAdminListen)
	if err := d.startAdmin(); err != nil || d.adminAPI != nil {
		t.Fatalf("default address taken: %v, API %v; want it off and no error", err, d.adminAPI)
	}
	if !strings.Contains(logs.String(), "admin API off: its default address is in use") {
		t.Errorf("no warning: %s", &logs)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d2 := newDaemon(l.Addr().String())
	if err := d2.startAdmin(); err == nil || !strings.Contains(err.Error(), `admin.listen "`+l.Addr().String()+`"`) {
		t.Errorf("a chosen address taken: %v, want an error naming admin.listen", err)
	}
}
