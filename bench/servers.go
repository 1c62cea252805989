//go:build linux

package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

// A server under test is a child process started with the same settings every time:
// loopback listeners on free ports, time-limited credentials from one shared secret,
// loopback peers allowed, quotas out of the way, logging quiet. Each measurement phase
// starts a fresh one and stops it, so no phase inherits another's heap or sockets.

const (
	kindRelay  = "relay"
	kindCoturn = "coturn"
	// The same relay with its kernel data path off ([turn] offload = "off"), and a
	// second coturn binary (-coturn-debian-bin): the data path comparison's other lines.
	kindRelayUser    = "relay-userspace"
	kindCoturnDebian = "coturn-debian"
	kindPeer         = "peer"
	kindRedis        = "redis" // the fleet's Redis (-mode fleet)
	benchRealm       = "bench"
)

type server struct {
	kind     string
	cmd      *exec.Cmd
	pid      int
	dir      string
	turn     netip.AddrPort // STUN/TURN UDP listener (relay, coturn)
	signal   string         // "127.0.0.1:port" of the PeerJS endpoint (relay, peer)
	redis    string         // "127.0.0.1:port" of a redis-server
	relayMin uint16         // relay port range
	relayMax uint16
	metrics  string // relay's /metrics, "127.0.0.1:port"
	// clientTLS: the signaling endpoint is https/wss (o.certFile) and this trusts it.
	clientTLS *tls.Config
	out       *tailBuffer
	exited    chan struct{}
	waitErr   error
}

// turnKinds are the TURN servers, in the order the report lists them.
var turnKinds = []string{kindRelay, kindRelayUser, kindCoturn, kindCoturnDebian}

// ownsPort says whether a local UDP port is one of this server's (listener or relay).
func (s *server) ownsPort(p uint16) bool {
	return p == s.turn.Port() || (p >= s.relayMin && p <= s.relayMax)
}

// tailBuffer keeps the last 64 KiB a child wrote, for error reports.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 64<<10 {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-(64<<10):]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// children tracks running servers so that an interrupt of the harness stops them too.
type children struct {
	mu  sync.Mutex
	set map[*server]struct{}
}

func (c *children) add(s *server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set == nil {
		c.set = map[*server]struct{}{}
	}
	c.set[s] = struct{}{}
}

func (c *children) remove(s *server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.set, s)
}

func (c *children) stopAll() {
	c.mu.Lock()
	list := make([]*server, 0, len(c.set))
	for s := range c.set {
		list = append(list, s)
	}
	c.mu.Unlock()
	for _, s := range list {
		s.stop()
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1 (relay listens on both).
func freePort() (uint16, error) {
	for i := 0; i < 50; i++ {
		tl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		return uint16(port), nil
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP on 127.0.0.1")
}

// relayOptional are settings newer relays have and older ones refuse as unknown keys:
// per-source-IP and per-client limits that would throttle a generator whose every
// client is 127.0.0.1 (coturn has none of them), lifted for the benchmark.
var relayOptional = []struct{ section, key, value string }{
	{"limits", "unauth_per_ip", "1000000"},
	{"limits", "max_bps", "0"},
	{"signal", "max_messages_per_second", "1000000"},
}

// relayUserspace is the setting that makes kindRelayUser: relay's own userspace data path.
var relayUserspace = struct{ section, key, value string }{"turn", "offload", `"off"`}

func (o *options) relayConfig(s *server, turnPort uint16) string {
	extra := map[string]string{}
	opt := relayOptional
	if s.kind == kindRelayUser {
		opt = append(opt[:len(opt):len(opt)], relayUserspace)
	}
	for _, k := range opt {
		if !o.relayUnknown[k.section+"."+k.key] {
			extra[k.section] += fmt.Sprintf("%s = %s\n", k.key, k.value)
		}
	}
	if s.clientTLS != nil {
		extra["signal"] += fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", o.certFile, o.keyFile)
	}
	return fmt.Sprintf(`realm = %q
[turn]
udp = ["127.0.0.1:%d"]
tcp = ["127.0.0.1:%d"]
relay_ip = "127.0.0.1"
relay_ports = "%d-%d"
%s[auth]
secrets = [%q]
[limits]
user_allocations = 100000
total_allocations = 100000
%s[peers]
allow = ["127.0.0.0/8"]
[metrics]
listen = %q
[signal]
listen = %q
concurrent_limit = %d
max_peers_per_ip = %d
%s[log]
level = "warn"
%s`, benchRealm, turnPort, turnPort, s.relayMin, s.relayMax, extra["turn"], o.secret, extra["limits"], s.metrics, s.signal, o.signalLimit, o.signalLimit, extra["signal"], o.clusterConfig(s))
}

// clusterConfig is the [cluster] section of a fleet node (o.clusterRedis set): the
// fleet's Redis, and a node name unique in the fleet (its signaling port).
func (o *options) clusterConfig(s *server) string {
	if o.clusterRedis == "" {
		return ""
	}
	_, port, _ := strings.Cut(s.signal, ":")
	return fmt.Sprintf("[cluster]\nredis = %q\nnode = %q\n", "redis://"+o.clusterRedis+"/0", "bench-"+port)
}

// startServer starts a server of kind and waits until it answers. A relay that refuses
// one of relayOptional as an unknown key is started again without it.
func (o *options) startServer(kind string) (*server, error) {
	for {
		s, err := o.startServerOnce(kind)
		if err == nil || (kind != kindRelay && kind != kindRelayUser) {
			return s, err
		}
		retry := false
		for _, k := range append(relayOptional[:len(relayOptional):len(relayOptional)], relayUserspace) {
			name := k.section + "." + k.key
			if !o.relayUnknown[name] && strings.Contains(err.Error(), `unknown key "`+name+`"`) {
				o.relayUnknown[name] = true
				o.logf("  this relay has no %s: left at its default", name)
				retry = true
			}
		}
		if !retry {
			return nil, err
		}
	}
}

func (o *options) startServerOnce(kind string) (*server, error) {
	dir, err := os.MkdirTemp("", "relay-bench-"+kind+"-")
	if err != nil {
		return nil, err
	}
	s := &server{kind: kind, dir: dir, out: &tailBuffer{}, exited: make(chan struct{})}
	if o.wss && kind != kindCoturn && kind != kindCoturnDebian {
		s.clientTLS = o.clientTLS
	}
	turnPort, err := freePort()
	if err != nil {
		return nil, err
	}
	sigPort, err := freePort()
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindRelay, kindRelayUser:
		s.relayMin, s.relayMax = o.relayPorts[0], o.relayPorts[1]
		s.turn = netip.AddrPortFrom(loopback, turnPort)
		s.signal = fmt.Sprintf("127.0.0.1:%d", sigPort)
		metricsPort, err := freePort()
		if err != nil {
			return nil, err
		}
		s.metrics = fmt.Sprintf("127.0.0.1:%d", metricsPort)
		cfg := filepath.Join(dir, "relay.toml")
		if err := os.WriteFile(cfg, []byte(o.relayConfig(s, turnPort)), 0o600); err != nil {
			return nil, err
		}
		s.cmd = exec.Command(o.relayBin, "-config", cfg)
	case kindCoturn, kindCoturnDebian:
		s.relayMin, s.relayMax = o.coturnPorts[0], o.coturnPorts[1]
		s.turn = netip.AddrPortFrom(loopback, turnPort)
		bin := o.coturnBin
		if kind == kindCoturnDebian {
			bin = o.coturnDebianBin
		}
		s.cmd = exec.Command(bin,
			"-n", "--no-cli", "--no-tls", "--no-dtls",
			"--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
			"--listening-port="+strconv.Itoa(int(turnPort)),
			"--min-port="+strconv.Itoa(int(s.relayMin)), "--max-port="+strconv.Itoa(int(s.relayMax)),
			"--use-auth-secret", "--static-auth-secret="+o.secret, "--realm="+benchRealm,
			"--fingerprint", "--allow-loopback-peers",
			"--no-stdout-log", "--log-file=/dev/null", "--simple-log",
			"--pidfile="+filepath.Join(dir, "turnserver.pid"), "--userdb="+filepath.Join(dir, "turndb"),
			"--total-quota=100000", "--user-quota=100000",
			// One listening address: NAT behaviour discovery (RFC 5780) cannot work and
			// only adds a warning; relay has none either. Same for SOFTWARE and TCP relays.
			"--no-rfc5780", "--no-software-attribute", "--no-tcp-relay",
		)
	case kindPeer:
		s.signal = fmt.Sprintf("127.0.0.1:%d", sigPort)
		// node inherits our limit, but say it: 15,000 sockets do not fit under the usual 1024.
		s.cmd = exec.Command("bash", "-c", `ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; shift; exec "$@"`, "bash",
			strconv.FormatUint(noFileLimit(), 10),
			o.nodeBin, o.peerJS, "--port", strconv.Itoa(int(sigPort)), "--host", "127.0.0.1",
			"--key", "peerjs", "--path", "/", "--concurrent_limit", strconv.Itoa(o.signalLimit))
		if s.clientTLS != nil {
			s.cmd.Args = append(s.cmd.Args, "--sslkey", o.keyFile, "--sslcert", o.certFile)
		}
	case kindRedis:
		// Nothing saved to disk: the fleet's registry is transient state.
		s.redis = fmt.Sprintf("127.0.0.1:%d", sigPort)
		s.cmd = exec.Command(o.redisBin, "--port", strconv.Itoa(int(sigPort)), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	default:
		return nil, fmt.Errorf("unknown server %q", kind)
	}
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// The child dies with the harness even if the harness is killed outright.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", kind, err)
	}
	s.pid = s.cmd.Process.Pid
	o.children.add(s)
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(15 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s did not become ready: %w\n%s", kind, err, s.out.String())
	}
	return s, nil
}

// waitReady polls what the phase will use: a STUN Binding on the TURN port, an HTTP GET
// on the signaling port.
func (s *server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited: %v", s.waitErr)
		default:
		}
		ok := true
		if s.turn.IsValid() && !stunAnswers(s.turn) {
			ok = false
		}
		if ok && s.signal != "" && !httpAnswers(s.signalURL("http")+"/", s.clientTLS) {
			ok = false
		}
		if ok && s.redis != "" {
			_, err := redisCommand(s.redis, "PING")
			ok = err == nil
		}
		if ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no answer within %v", limit)
}

func stunAnswers(a netip.AddrPort) bool {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a))
	if err != nil {
		return false
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return err == nil && n >= 20 && bytes.Equal(buf[8:20], req.TransactionID[:])
}

func httpAnswers(url string, tlsConf *tls.Config) bool {
	cl := http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop ends the server: relay on SIGINT (SIGTERM would drain open allocations for up to
// 30 s), the others on SIGTERM; SIGKILL after 5 s.
func (s *server) stop() {
	defer func() {
		os.RemoveAll(s.dir)
	}()
	select {
	case <-s.exited:
		return
	default:
	}
	sig := syscall.SIGTERM
	if s.kind == kindRelay || s.kind == kindRelayUser {
		sig = syscall.SIGINT
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (o *options) stopServer(s *server) {
	s.stop()
	o.children.remove(s)
}

// alive reports an unexpected exit (a crash under load is a result, not a hang).
func (s *server) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited during the phase: %v\n%s", s.kind, s.waitErr, s.out.String())
	default:
		return nil
	}
}

// dataPath says which data path a relay server runs: "kernel" or "userspace" as its
// relay_turn_offload_active says, "" for a relay without the metric or another server.
func (s *server) dataPath() string {
	if s.metrics == "" {
		return ""
	}
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, line := range strings.Split(string(b), "\n") {
		switch line {
		case "relay_turn_offload_active 1":
			return "kernel"
		case "relay_turn_offload_active 0":
			return "userspace"
		}
	}
	return ""
}
