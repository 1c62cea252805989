package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/internal/testcert"
)

func TestCreds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.toml")
	cert, key, _ := testcert.Write(t)
	cfg := "realm = \"r\"\n[turn]\nudp = [\"0.0.0.0:3478\"]\ntcp = []\ntls = [\"0.0.0.0:5349\"]\ntls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\npublic_ip = \"198.51.100.4\"\n[auth]\nsecrets = [\"new-secret\", \"old-secret\"]\nmax_ttl = \"2h\"\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := creds([]string{"-config", path, "-user", "alice", "-ttl", "5h"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got credsOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	if got.TTL != 7200 {
		t.Errorf("ttl %d, want 7200 (clamped to max_ttl)", got.TTL)
	}
	if !strings.HasSuffix(got.Username, ":alice") {
		t.Errorf("username %q", got.Username)
	}
	if got.Password != auth.RESTPassword("new-secret", got.Username) {
		t.Errorf("password not signed with the first secret")
	}
	want := "turn:198.51.100.4:3478?transport=udp turns:198.51.100.4:5349?transport=tcp"
	if strings.Join(got.URIs, " ") != want {
		t.Errorf("uris %v, want %s", got.URIs, want)
	}
	a, _ := auth.New(auth.Options{Secrets: []string{"new-secret"}, MaxTTL: 2 * time.Hour})
	if keys, _, _, ok := a.Candidates(got.Username, "r"); !ok || len(keys) != 1 {
		t.Errorf("minted credentials do not verify")
	}

	// Without secrets there is nothing to sign with: a clear error, not made-up creds.
	empty := filepath.Join(t.TempDir(), "empty.toml")
	_ = os.WriteFile(empty, []byte(""), 0o600)
	err := creds([]string{"-config", empty}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "secrets") {
		t.Errorf("creds without secrets: %v", err)
	}
}
