package config

import (
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Cluster is the [cluster] section: a fleet of relay nodes sharing signaling (peer ids,
// messages between peers, queued messages) through one Redis. Redis "" (the default)
// is a single node with the in-process registry, exactly as without the section.
type Cluster struct {
	// Redis is the redis:// or rediss:// (TLS) URL of the shared Redis; "" = single
	// node. It may carry a password; never log it (Redacted gives a loggable form).
	Redis string
	// RedisPasswordFile names a file holding the Redis password, read at Load so
	// that the secret need not sit in the config file. "" = none.
	RedisPasswordFile string
	// Password is the content of RedisPasswordFile (trailing newline removed), filled
	// by Load; "" when there is no file. A secret: never logged or put in an error.
	Password string
	// Node is this node's name, unique in the fleet; "" means the host name (NodeName).
	Node string
	// Region is an optional label: ICE answers prefer nodes of the caller's node's region.
	Region string
	// ICENodes is how many nodes' TURN URLs one ICE answer carries.
	ICENodes int
}

func defaultCluster() Cluster { return Cluster{ICENodes: 2} }

// Enabled reports whether this node is part of a fleet.
func (c *Cluster) Enabled() bool { return c.Redis != "" }

// NodeName is Node, or the host name when Node is "" (or "relay" when the host name
// cannot be read), as the fleet knows this node.
func (c *Cluster) NodeName() string {
	if c.Node != "" {
		return c.Node
	}
	if h, err := os.Hostname(); err == nil && validNodeName(h) {
		return h
	}
	return "relay"
}

// Redacted is Redis with any password replaced by "xxxxx", for logs.
func (c *Cluster) Redacted() string { return redactURL(c.Redis) }

// redactURL hides the password of a redis URL; a URL that does not parse is hidden
// entirely, since where its password is cannot be told.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "***"
	}
	return u.Redacted()
}

const nodeWant = `a name of 1 to 64 letters, digits, ".", "-" or "_", unique in the fleet, e.g. "relay-1", or "" for the host name`

func (c *Cluster) decode(t *table) {
	t.str("redis", `a Redis URL such as "redis://127.0.0.1:6379/0" or "rediss://:password@redis.example.org:6380/0", or "" for a single node`, &c.Redis)
	t.str("redis_password_file", `the path of a file holding the Redis password, e.g. "/etc/relay/redis-password", or "" for none`, &c.RedisPasswordFile)
	t.str("node", nodeWant, &c.Node)
	t.str("region", `a short label such as "eu-west", or "" for none`, &c.Region)
	t.integer("ice_nodes", "an integer >= 1", &c.ICENodes)
}

func validNodeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Cluster) validate(ch *checker) {
	if c.Redis != "" {
		u, err := url.Parse(c.Redis)
		switch {
		case err != nil:
			// url's error quotes the whole URL, password included: say only that it failed.
			ch.errorf("cluster.redis", c.Redis, `not a valid URL: expected "redis://host:port/db" or "rediss://host:port/db" (percent-encode special characters of the password, or put it in redis_password_file)`)
		case u.Scheme != "redis" && u.Scheme != "rediss":
			ch.errorf("cluster.redis", c.Redis, `scheme %q is not supported: expected "redis://" or "rediss://" (TLS), e.g. "redis://127.0.0.1:6379/0"`, u.Scheme)
		case u.Hostname() == "":
			ch.errorf("cluster.redis", c.Redis, `no host: expected "redis://host:port/db", e.g. "redis://127.0.0.1:6379/0"`)
		case u.Port() != "" && !validPort(u.Port()):
			ch.errorf("cluster.redis", c.Redis, `port %q is not a number from 1 to 65535: expected e.g. "redis://127.0.0.1:6379/0"`, u.Port())
		case u.RawQuery != "" || u.Fragment != "":
			ch.errorf("cluster.redis", c.Redis, `no query or fragment: expected "redis://host:port/db", e.g. "redis://127.0.0.1:6379/0"`)
		default:
			if db := strings.TrimPrefix(u.Path, "/"); db != "" {
				if n, err := strconv.Atoi(db); err != nil || n < 0 || n > 15 {
					ch.errorf("cluster.redis", c.Redis, `database %q is not a number from 0 to 15: expected e.g. "redis://127.0.0.1:6379/0"`, db)
				}
			}
			if _, set := u.User.Password(); set && c.RedisPasswordFile != "" {
				ch.errorf("cluster.redis_password_file", c.RedisPasswordFile, "cluster.redis has a password too: give the password in one place, the URL or this file")
			}
		}
	}
	if c.Node != "" && !validNodeName(c.Node) {
		ch.errorf("cluster.node", c.Node, "expected %s", nodeWant)
	}
	if len(c.Region) > 64 || strings.ContainsAny(c.Region, " \t\r\n\"'") {
		ch.errorf("cluster.region", c.Region, `expected a short label without spaces or quotes, e.g. "eu-west", or "" for none`)
	}
	if c.ICENodes < 1 {
		ch.errorf("cluster.ice_nodes", c.ICENodes, "expected an integer >= 1 (how many nodes' TURN URLs one ICE answer carries)")
	}
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// readPassword reads redis_password_file at Load, so that a missing or unreadable
// file stops relay with the key's line; the content never appears in an error.
func (c *Cluster) readPassword(ch *checker) {
	c.Password = ""
	if c.RedisPasswordFile == "" {
		return
	}
	b, err := os.ReadFile(c.RedisPasswordFile)
	if err != nil {
		ch.errorf("cluster.redis_password_file", c.RedisPasswordFile, "cannot read the Redis password: %s; %s, or set redis_password_file = \"\"",
			fileProblem(err), fileFix(err, "the file holding the Redis password"))
		return
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" || strings.ContainsAny(pw, "\r\n") {
		ch.errorf("cluster.redis_password_file", c.RedisPasswordFile, "expected the password on one line, alone in the file")
		return
	}
	c.Password = pw
}
