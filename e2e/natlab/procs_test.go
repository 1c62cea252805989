//go:build linux

package natlab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	turnPort   = 3478
	turnsPort  = 5349
	signalPort = 9001
	labSecret  = "natlab-shared-secret-0123456789abcdef"
)

// buildBinaries builds relay and the lab's peer into a temporary directory. The peer is
// a Go module of its own (cmd/peer/go.mod), so that pion/webrtc stays out of the
// server's go.mod: it is built from its own directory.
func buildBinaries(t *testing.T) (relayBin, peerBin string) {
	t.Helper()
	dir := t.TempDir()
	relayBin, peerBin = filepath.Join(dir, "relay"), filepath.Join(dir, "peer")
	for _, b := range []struct{ bin, dir, pkg string }{
		{relayBin, ".", "../../cmd/relay"},
		{peerBin, "cmd/peer", "."},
	} {
		cmd := exec.Command("go", "build", "-o", b.bin, b.pkg)
		cmd.Dir = b.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s in %s: %v\n%s", b.pkg, b.dir, err, out)
		}
	}
	return relayBin, peerBin
}

// relayConfig is relay on its public address in the lab. 198.18.0.0/15 is in relay's
// default peer deny list (reserved, benchmarking); the lab's NATs' public addresses are
// there, so the config allows that range as peers.
func relayConfig(certFile, keyFile string) string {
	return fmt.Sprintf(`realm = "natlab"
[turn]
udp = ["%[1]s:%[2]d"]
tcp = ["%[1]s:%[2]d"]
tls = ["%[1]s:%[3]d"]
tls_cert = %[4]q
tls_key = %[5]q
relay_ip = "%[1]s"
relay_ports = "49152-49999"
udp_sockets = 1
drain_timeout = "0s"
[auth]
secrets = [%[6]q]
[limits]
total_allocations = 800
[peers]
allow = ["198.18.0.0/15"]
[metrics]
listen = ""
[signal]
listen = "%[1]s:%[7]d"
public_host = "%[1]s"
ice_requests_per_minute = 1000
[log]
format = "json"
level = "info"
`, relayIP, turnPort, turnsPort, certFile, keyFile, labSecret, signalPort)
}

// proc is a process running in a namespace, its output kept line by line.
type proc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer // stdout and stderr, interleaved
	lines  chan string  // stdout lines
	exited chan struct{}
	err    error
}

// start runs argv inside ns with `ip netns exec` (which execs it: the pid is the
// program's own) and stops it with t.Cleanup.
func start(t *testing.T, name, ns string, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, lines: make(chan string, 256), exited: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	p.cmd.Env = append(os.Environ(), env...)
	// If the test process dies, so does the lab's process (ip netns exec keeps the pid and
	// the parent-death signal); the next run removes the namespaces.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- line:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = p.cmd.Wait()
		close(p.lines)
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(syscall.SIGKILL, 0) })
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// stop signals the process and waits up to grace for it before killing it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitLine waits for a stdout line with the prefix and returns the rest of it.
func (p *proc) waitLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("%s exited (%v) before printing %s", p.name, p.err, prefix)
			}
			if rest, found := strings.CutPrefix(line, prefix); found {
				return strings.TrimSpace(rest), nil
			}
		case <-deadline:
			return "", fmt.Errorf("%s printed no %s within %v", p.name, prefix, timeout)
		}
	}
}

// startRelay runs relay in the public namespace and waits for "relay started".
func startRelay(t *testing.T, relayBin, dir, certFile, keyFile string) *proc {
	t.Helper()
	cfg := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(cfg, []byte(relayConfig(certFile, keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	// relay logs JSON to stderr: send it through the line reader.
	p := start(t, "relay", pubNS, nil, "sh", "-c", `exec "$0" -config "$1" 2>&1`, relayBin, cfg)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("relay exited before starting: %v\n%s", p.err, p.output())
			}
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "relay started" {
				// Drain the rest of the log into the buffer from now on.
				go func() {
					for range p.lines {
					}
				}()
				return p
			}
		case <-deadline:
			t.Fatalf("relay did not start in 10s\n%s", p.output())
		}
	}
}
