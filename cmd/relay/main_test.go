package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayproject/relay/internal/testcert"
)

// TestCommandLine: help is not an error, the version has the flags people try, and an
// argument relay would not use is refused instead of ignored. None of these starts a
// server: each returns before any config is loaded.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string // must contain
		stderr     string // must contain
		noStdout   bool
		noStderrOf string // must not contain
	}{
		{name: "-h", args: []string{"-h"}, code: 0, stdout: "relay creds", noStderrOf: "help requested"},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: "-config FILE", noStderrOf: "help requested"},
		{name: "help", args: []string{"help"}, code: 0, stdout: "relay check URL"},
		{name: "serve -h", args: []string{"serve", "-h"}, code: 0, stdout: "relay [-config FILE]"},
		{name: "creds -h", args: []string{"creds", "-h"}, code: 0, stdout: "-ttl", noStderrOf: "help requested"},
		{name: "--version", args: []string{"--version"}, code: 0, stdout: "relay dev ("},
		{name: "-version", args: []string{"-version"}, code: 0, stdout: "relay dev ("},
		{name: "version", args: []string{"version"}, code: 0, stdout: "relay dev ("},
		{name: "extra argument", args: []string{"-config", "relay.toml", "extra"}, code: 2, noStdout: true,
			stderr: `unexpected argument "extra"`},
		{name: "extra argument after serve", args: []string{"serve", "-config", "x.toml", "x.toml"}, code: 2, noStdout: true,
			stderr: `unexpected argument "x.toml"`},
		{name: "creds extra argument", args: []string{"creds", "-user", "alice", "bob"}, code: 2, noStdout: true,
			stderr: `unexpected argument "bob"`},
		{name: "version extra argument", args: []string{"version", "now"}, code: 2, noStdout: true, stderr: `"now"`},
		{name: "unknown flag", args: []string{"-confg", "relay.toml"}, code: 2, noStdout: true,
			stderr: "flag provided but not defined: -confg"},
		{name: "unknown command", args: []string{"serv"}, code: 2, noStdout: true, stderr: `unknown command "serv"`},
		{name: "check without URL", args: []string{"check"}, code: 2, noStdout: true, stderr: "want exactly one URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("relay %s: exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.code, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tc.stdout) || (tc.noStdout && stdout.Len() > 0) {
				t.Errorf("relay %s: stdout %q, want it to contain %q", strings.Join(tc.args, " "), &stdout, tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("relay %s: stderr %q, want it to contain %q", strings.Join(tc.args, " "), &stderr, tc.stderr)
			}
			if tc.noStderrOf != "" && strings.Contains(stderr.String()+stdout.String(), tc.noStderrOf) {
				t.Errorf("relay %s: output mentions %q:\n%s%s", strings.Join(tc.args, " "), tc.noStderrOf, &stdout, &stderr)
			}
		})
	}
}

// TestCredsTURNSUsesPublicHost: with [signal] public_host set, the URIs of relay creds
// carry that name, like the ICE endpoint's: a turns: client checks the server's
// certificate against the URI's host, and certificates name hosts, not addresses.
func TestCredsTURNSUsesPublicHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.toml")
	cert, key, _ := testcert.Write(t)
	cfg := fmt.Sprintf("[turn]\nudp = [\"0.0.0.0:3478\"]\ntcp = []\ntls = [\"0.0.0.0:5349\"]\ntls_cert = %q\ntls_key = %q\npublic_ip = \"198.51.100.4\"\n", cert, key) +
		"[auth]\nsecrets = [\"s\"]\n[signal]\npublic_host = \"turn.example.org\"\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := creds([]string{"-config", path}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var got credsOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	want := "turn:turn.example.org:3478?transport=udp turns:turn.example.org:5349?transport=tcp"
	if strings.Join(got.URIs, " ") != want {
		t.Errorf("uris %v, want %s", got.URIs, want)
	}
	// -host still wins.
	out.Reset()
	if err := creds([]string{"-config", path, "-host", "203.0.113.9"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "turns:203.0.113.9:5349") {
		t.Errorf("-host ignored: %s", &out)
	}
}

// TestMissingCertificateBeforeListeners: a [signal] certificate that is not there stops
// relay with the file, line, key and value before it opens any socket. The test holds
// the ports the config asks for: had relay tried to open a listener first, it would have
// failed on that port instead.
func TestMissingCertificateBeforeListeners(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	_, key, _ := testcert.Write(t)
	missing := filepath.Join(t.TempDir(), "fullchain.pem")
	path := filepath.Join(t.TempDir(), "relay.toml")
	cfg := fmt.Sprintf("[turn]\nudp = [%q]\ntcp = []\n\n[auth]\nsecrets = [\"s\"]\n\n[metrics]\nlisten = %q\n\n"+
		"[signal]\nlisten = \"127.0.0.1:0\"\ntls_cert = %q\ntls_key = %q\n",
		udp.LocalAddr().String(), tcp.Addr().String(), missing, key)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-config", path}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit status %d, want 1; stderr:\n%s", code, &stderr)
	}
	want := fmt.Sprintf("relay: %s:13: signal.tls_cert = %q: cannot read the certificate: no such file or directory", path, missing)
	if !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("stderr:\n%s\nwant it to start with\n%s", &stderr, want)
	}
}
