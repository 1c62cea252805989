// Package e2e holds relay's cross-process tests: the built binary against real clients
// (pion's TURN client, coturn's turnutils), driven the way an operator runs it.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/skipnote"
)

var relayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "relay")
	build := exec.Command("go", "build", "-o", relayBin, "../cmd/relay")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building relay:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	skipnote.Report("e2e")
	os.Exit(code)
}

// need finds an external program; in CI a missing one fails the test instead of
// skipping (skipnote).
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		skipnote.Skip(t, name+" not found", "apt-get install "+pkg)
	}
	return path
}

// relayProc is a running relay binary.
type relayProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	cfgPath string
	addrs   map[string]string // transport -> bound address ("udp", "tcp", "tls", "http")
	mu      sync.Mutex
	stderr  bytes.Buffer
	exited  chan struct{}
	waitErr error
}

// startRelay runs relay with the given TOML (log format forced to JSON so the harness
// can read the bound addresses; signaling and the admin API on free loopback ports unless
// the TOML has a [signal] or [admin] section) and waits until it says it started.
func startRelay(t *testing.T, toml string) *relayProc {
	t.Helper()
	return startRelayEnv(t, toml, nil)
}

// writeConfig writes toml as the harness runs it: JSON logs, and signaling on a free
// loopback port unless the TOML has a [signal] section.
func writeConfig(t *testing.T, path, toml string) {
	t.Helper()
	if !strings.Contains(toml, "[signal]") {
		// The default signaling listener is 0.0.0.0:9001: tests take a free loopback port.
		toml += "\n[signal]\nlisten = \"127.0.0.1:0\"\n"
	}
	if !strings.Contains(toml, "[admin]") {
		// The admin API's default is 127.0.0.1:9642: tests take a free port (addr("admin")).
		toml += "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
	}
	if err := os.WriteFile(path, []byte(toml+"\n[log]\nformat = \"json\"\nlevel = \"info\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startRelayEnv is startRelay with extra environment variables.
func startRelayEnv(t *testing.T, toml string, env []string) *relayProc {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "relay.toml")
	writeConfig(t, cfgPath, toml)
	p := &relayProc{t: t, cfgPath: cfgPath, addrs: map[string]string{}, exited: make(chan struct{})}
	p.cmd = exec.Command(relayBin, "-config", cfgPath)
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				if rec["msg"] == "listening" {
					tr, _ := rec["transport"].(string)
					addr, _ := rec["addr"].(string)
					if _, seen := p.addrs[tr]; !seen {
						p.addrs[tr] = addr
					}
				}
				if rec["msg"] == "relay started" {
					once.Do(func() { close(started) })
				}
			}
			p.mu.Unlock()
		}
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(syscall.SIGTERM) })
	select {
	case <-started:
	case <-p.exited:
		t.Fatalf("relay exited before starting: %v\n%s", p.waitErr, p.log())
	case <-time.After(10 * time.Second):
		t.Fatalf("relay did not start in 10s\n%s", p.log())
	}
	return p
}

// rewrite replaces the config file the relay was started with (for SIGHUP).
func (p *relayProc) rewrite(toml string) { writeConfig(p.t, p.cfgPath, toml) }

// waitLog waits until the log contains s.
func (p *relayProc) waitLog(s string) {
	p.t.Helper()
	waitFor(p.t, "the log to say "+s, func() bool { return strings.Contains(p.log(), s) })
}

// waitLogWithin is waitLog with its own deadline, for what takes long on a loaded machine.
func (p *relayProc) waitLogWithin(s string, d time.Duration) {
	p.t.Helper()
	poll.Until(p.t, d, "the log to say "+s, func() bool { return strings.Contains(p.log(), s) })
}

func (p *relayProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *relayProc) addr(transport string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.addrs[transport]
	if !ok {
		p.t.Fatalf("relay logged no %s listener\n%s", transport, p.stderr.String())
	}
	return a
}

func (p *relayProc) port(transport string) string {
	_, port, _ := net.SplitHostPort(p.addr(transport))
	return port
}

// stop sends sig and waits for the process; it must exit 0 within 10 s.
func (p *relayProc) stop(sig os.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			p.t.Errorf("relay exited with %v after %v\n%s", p.waitErr, sig, p.log())
		}
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("relay did not exit within 10s of %v", sig)
	}
}

// metrics scrapes /metrics and returns the sample lines (name{labels} value).
func (p *relayProc) metrics() map[string]float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.addr("http") + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// freeUDPPortPair finds p such that UDP p and p+1 are free on 127.0.0.1 (turnutils_peer
// binds both).
func freeUDPPortPair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		_ = a.Close()
		if err == nil {
			_ = b.Close()
			return port
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}
