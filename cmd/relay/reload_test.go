package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/metrics"
)

// TestSecurity5APITokensNotInReloadLog: a reload that fails on an api_tokens line logs
// the error (file, line, key) without the token.
func TestSecurity5APITokensNotInReloadLog(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	const tok = "hunter2token"
	path := filepath.Join(t.TempDir(), "relay.toml")
	var logs bytes.Buffer
	d := &daemon{path: path, level: new(slog.LevelVar), metrics: metrics.New("test", "test"),
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, src := range []string{
		"[signal]\napi_tokens = \"" + tok + "\"\n",         // a string, not an array
		"[signal]\napi_tokens = [\"" + tok + "\", \"\"]\n", // an empty entry beside it
		"[signal]\napi_tokens = [" + tok + "]\n",           // a syntax error quoting it
	} {
		logs.Reset()
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		d.reload()
		out := logs.String()
		if !strings.Contains(out, "reload: keeping the running configuration") || !strings.Contains(out, "relay.toml:2") {
			t.Errorf("reload of %q logged %q: want the failure with file and line", src, out)
		}
		if strings.Contains(out, "hunter") {
			t.Errorf("reload log leaks the token: %s", out)
		}
	}
	if got := testutil.ToFloat64(d.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure)); got != 3 {
		t.Errorf("failed reloads counted %v, want 3", got)
	}
}

// TestRequireSecretOnReload: under -require-secret a reload that would leave relay
// without secrets is refused like any bad file: logged, counted, running config kept.
func TestRequireSecretOnReload(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var logs bytes.Buffer
	d := &daemon{path: noSecretConfig(t), level: new(slog.LevelVar), metrics: metrics.New("test", "test"),
		log: slog.New(slog.NewTextHandler(&logs, nil)), needSecret: true}
	d.reload()
	if !strings.Contains(logs.String(), "reload: keeping the running configuration") || !strings.Contains(logs.String(), "no [auth] secrets") {
		t.Errorf("reload without secrets logged %q", &logs)
	}
	if got := testutil.ToFloat64(d.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure)); got != 1 {
		t.Errorf("failed reloads counted %v, want 1", got)
	}
}
