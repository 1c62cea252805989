package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterDefaults(t *testing.T) {
	c := Default()
	if c.Cluster.Enabled() || c.Cluster.Redis != "" || c.Cluster.ICENodes != 2 || c.Cluster.Node != "" || c.Cluster.Region != "" {
		t.Errorf("cluster defaults = %+v", c.Cluster)
	}
	h, _ := os.Hostname()
	if n := c.Cluster.NodeName(); n == "" || (validNodeName(h) && n != h) {
		t.Errorf("NodeName() = %q, host name %q", n, h)
	}
	c = mustParse(t, "[cluster]\nredis = \"rediss://:pw@redis.example.org:6380/3\"\nnode = \"relay-1\"\nregion = \"eu-west\"\nice_nodes = 3\n")
	if !c.Cluster.Enabled() || c.Cluster.NodeName() != "relay-1" || c.Cluster.Region != "eu-west" || c.Cluster.ICENodes != 3 {
		t.Errorf("cluster = %+v", c.Cluster)
	}
	if r := c.Cluster.Redacted(); strings.Contains(r, "pw") || !strings.Contains(r, "redis.example.org:6380") {
		t.Errorf("Redacted() = %q", r)
	}
}

func TestClusterErrors(t *testing.T) {
	cases := []struct {
		name, doc, key string
		line           int
		want           string
	}{
		{"scheme", "[cluster]\nredis = \"http://127.0.0.1:6379\"\n", "cluster.redis", 2, `scheme "http" is not supported`},
		{"no host", "[cluster]\nredis = \"redis:///0\"\n", "cluster.redis", 2, "no host"},
		{"port", "[cluster]\n\nredis = \"redis://127.0.0.1:99999/0\"\n", "cluster.redis", 3, "not a number from 1 to 65535"},
		{"db", "[cluster]\nredis = \"redis://127.0.0.1:6379/x\"\n", "cluster.redis", 2, `database "x"`},
		{"not a string", "[cluster]\nredis = 5\n", "cluster.redis", 2, "Redis URL"},
		{"node", "[cluster]\nnode = \"relay 1\"\n", "cluster.node", 2, "unique in the fleet"},
		{"region", "[cluster]\nregion = \"eu west\"\n", "cluster.region", 2, "short label"},
		{"ice nodes", "[cluster]\nice_nodes = 0\n", "cluster.ice_nodes", 2, ">= 1"},
		{"two passwords", "[cluster]\nredis = \"redis://:pw@127.0.0.1:6379/0\"\nredis_password_file = \"/p\"\n", "cluster.redis_password_file", 3, "one place"},
		{"unknown", "[cluster]\nnodes = \"a\"\n", "cluster.nodes", 2, `did you mean "cluster.node"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantError(t, tc.doc, tc.key, tc.line, tc.want) })
	}
}

// The Redis password, in the URL or in its file, never appears in an error.
func TestClusterRedisPasswordNeverInErrors(t *testing.T) {
	const secret = "hunter2hunter2"
	for _, src := range []string{
		"[cluster]\nredis = \"http://:" + secret + "@127.0.0.1:6379/0\"\n",
		"[cluster]\nredis = \"redis://:" + secret + "@127.0.0.1:6379/x\"\n",
		"[cluster]\nredis = \"redis://:" + secret + "@127.0.0.1:99999/0\"\n",
		"[cluster]\nredis = \"redis://:" + secret + "%zz@127.0.0.1:6379/0\"\n", // not a URL
		"[cluster]\nredis = \"redis://:" + secret + "@127.0.0.1:6379/0\"\nredis_password_file = \"/p\"\n",
		"[cluster]\nredis = redis://:" + secret + "@127.0.0.1\n", // syntax error quoting the text
		"[cluster]\nredis = [\"redis://:" + secret + "@127.0.0.1\"]\n",
		"cluster = \"redis://:" + secret + "@127.0.0.1\"\n",
	} {
		expectHidden(t, src, "hunter")
	}
}

func TestClusterPasswordFileReadAtLoad(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pw, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "relay.toml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nredis_password_file = \"" + pw + "\"\n")
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Password != "s3cret-pw" {
		t.Errorf("Password = %q", c.Cluster.Password)
	}
	write("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n\nredis_password_file = \"" + filepath.Join(dir, "missing") + "\"\n")
	_, err = Load(cfg)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != "cluster.redis_password_file" || errs[0].Line != 4 ||
		!strings.Contains(err.Error(), "cannot read the Redis password") {
		t.Errorf("missing password file: %v", err)
	}
	if err := os.WriteFile(pw, []byte("two\nlines-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nredis_password_file = \"" + pw + "\"\n")
	if _, err = Load(cfg); err == nil || !strings.Contains(err.Error(), "one line") || strings.Contains(err.Error(), "secret") {
		t.Errorf("two-line password file: %v", err)
	}
}

func TestClusterWarnings(t *testing.T) {
	has := func(c *Config, sub string) bool {
		for _, w := range c.Warnings() {
			if strings.Contains(w, sub) {
				return true
			}
		}
		return false
	}
	c := mustParse(t, "[signal]\nlisten = \"\"\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n")
	if !has(c, "does not join it") || !has(c, "set signal.public_host") {
		t.Errorf("warnings: %q", c.Warnings())
	}
	c = mustParse(t, "[signal]\npublic_host = \"relay1.example.org\"\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n")
	if has(c, "cluster.") {
		t.Errorf("warnings for a good fleet node: %q", c.Warnings())
	}
	if has(mustParse(t, ""), "cluster.") {
		t.Errorf("cluster warnings without [cluster]")
	}
}
