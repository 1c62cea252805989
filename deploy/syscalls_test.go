package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/relayproject/relay/auth"
)

// syscallGroups expands systemd's named system call sets (systemd-analyze syscall-filter)
// into plain system call names, following nested @groups.
func syscallGroups(t *testing.T, analyze string) map[string][]string {
	t.Helper()
	out, err := exec.Command(analyze, "syscall-filter", "--no-pager").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	current := ""
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "@"):
			current = strings.TrimSpace(line)
		case strings.HasPrefix(line, "#"):
			current = "" // the trailing lists of ungrouped calls
		case current != "":
			if item := strings.TrimSpace(line); item != "" && !strings.HasPrefix(item, "#") {
				groups[current] = append(groups[current], item)
			}
		}
	}
	if len(groups["@system-service"]) == 0 {
		t.Fatalf("no @system-service in systemd-analyze syscall-filter output")
	}
	return groups
}

func expand(groups map[string][]string, name string, into map[string]bool) {
	if !strings.HasPrefix(name, "@") {
		into[name] = true
		return
	}
	for _, item := range groups[name] {
		if !into[item] {
			expand(groups, item, into)
		}
	}
}

// allowedSyscalls evaluates the unit's SystemCallFilter= lines the way systemd does: the
// first, positive line is the allow list; each "~" line removes calls from it.
func allowedSyscalls(t *testing.T, analyze string, filters []string) map[string]bool {
	t.Helper()
	groups := syscallGroups(t, analyze)
	allowed := map[string]bool{}
	for i, f := range filters {
		deny := strings.HasPrefix(f, "~")
		if i == 0 && deny {
			t.Fatalf("first SystemCallFilter= is a deny list; this check expects an allow list")
		}
		set := map[string]bool{}
		for _, item := range strings.Fields(strings.TrimPrefix(f, "~")) {
			expand(groups, item, set)
		}
		for c := range set {
			if deny {
				delete(allowed, c)
			} else {
				allowed[c] = true
			}
		}
	}
	return allowed
}

// TestSyscallFilterCoversRelay runs relay under strace through start-up, TURN allocations
// over UDP and TCP with data relayed both ways, the ICE endpoint, a metrics scrape, a
// reload (SIGHUP) and a drain (SIGTERM with an allocation open), and checks that every
// system call it made is allowed by the unit's SystemCallFilter= lines. A call outside
// the filter would fail with EPERM under systemd (SystemCallErrorNumber=EPERM).
func TestSyscallFilterCoversRelay(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	straceBin := need(t, "strace", "strace")
	filters := unitSettings(t, readFile(t, unitFile))["Service"]["SystemCallFilter"]
	if len(filters) == 0 {
		t.Skip("the unit sets no SystemCallFilter")
	}
	allowed := allowedSyscalls(t, analyze, filters)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.toml")
	writeFile(t, cfg, `realm = "deploy.test"
[turn]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
relay_ip = "127.0.0.1"
relay_ports = "62000-62999"
drain_timeout = "1s"
# The unit runs relay without CAP_BPF, so the kernel data path never loads there (and
# bpf(2) is outside its filter); root here would load it. deploy/README.md says what a
# drop-in that turns it on must allow.
offload = "off"
[auth]
secrets = ["deploy-test-secret-0123456789abcdef0123456789"]
[peers]
allow = ["127.0.0.0/8"]
[metrics]
listen = "127.0.0.1:0"
[signal]
listen = "127.0.0.1:0"
[log]
format = "json"
`)
	summary := filepath.Join(dir, "strace.txt")
	cmd := exec.Command(straceBin, "-f", "-c", "-o", summary, relayBinary(t), "-config", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var mu sync.Mutex
	var logText strings.Builder
	addrs := map[string]string{}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			logText.WriteString(sc.Text() + "\n")
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				if rec["msg"] == "listening" {
					tr, _ := rec["transport"].(string)
					if a, _ := rec["addr"].(string); addrs[tr] == "" {
						addrs[tr] = a
					}
				}
				if rec["msg"] == "relay started" {
					once.Do(func() { close(started) })
				}
			}
			mu.Unlock()
		}
		exited <- cmd.Wait()
	}()
	relayPid := 0
	t.Cleanup(func() {
		if relayPid != 0 {
			_ = syscall.Kill(relayPid, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
	})
	logs := func() string { mu.Lock(); defer mu.Unlock(); return logText.String() }
	select {
	case <-started:
	case err := <-exited:
		if strings.Contains(logs(), "ptrace") {
			t.Skipf("strace cannot trace here (ptrace not permitted): %s", logs())
		}
		t.Fatalf("relay under strace exited: %v\n%s", err, logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("relay under strace did not start\n%s", logs())
	}
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(children))) != 1 {
		t.Fatalf("relay's pid under strace: %q %v", children, err)
	}
	relayPid, _ = strconv.Atoi(strings.Fields(string(children))[0])
	addr := func(tr string) string { mu.Lock(); defer mu.Unlock(); return addrs[tr] }

	// Traffic: what a production relay does.
	echo := testpeer.Echo(t)
	udpConn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udpConn.Close()
	relayThrough(t, udpConn, addr("udp"), echo)
	tcpConn, err := net.Dial("tcp", addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer tcpConn.Close()
	tcpClient := relayThrough(t, turn.NewSTUNConn(tcpConn), addr("tcp"), echo) // stays open through the drain
	for _, url := range []string{"http://" + addr("signal") + "/ice", "http://" + addr("http") + "/metrics"} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
	}
	if err := syscall.Kill(relayPid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs(), "config reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(relayPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("relay under strace: %v\n%s", err, logs())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("relay did not exit after SIGTERM\n%s", logs())
	}
	tcpClient.Close()
	if !strings.Contains(logs(), `"msg":"stopped"`) {
		t.Fatalf("relay did not stop cleanly\n%s", logs())
	}

	used := map[string]bool{}
	for _, line := range strings.Split(readFile(t, summary), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[len(f)-1] == "total" || f[len(f)-1] == "syscall" || strings.HasPrefix(f[0], "-") {
			continue
		}
		used[f[len(f)-1]] = true
	}
	if len(used) < 20 || !used["epoll_pwait"] && !used["epoll_wait"] {
		t.Fatalf("strace summary looks wrong (%d calls):\n%s", len(used), readFile(t, summary))
	}
	var outside []string
	for c := range used {
		if !allowed[c] {
			outside = append(outside, c)
		}
	}
	sort.Strings(outside)
	if len(outside) > 0 {
		t.Fatalf("relay made system calls the unit's SystemCallFilter %q does not allow: %v", filters, outside)
	}
	// The check can fail: a narrower filter leaves relay's socket calls outside.
	narrow := allowedSyscalls(t, analyze, []string{"@system-service", "~@network-io"})
	if narrow["socket"] || !used["socket"] {
		t.Fatalf("the filter evaluation is not discriminating: socket allowed=%v used=%v", narrow["socket"], used["socket"])
	}
	t.Logf("%d distinct system calls, all within %q", len(used), filters)
}

// relayThrough allocates on server over conn with credentials minted from the test
// secret and echoes a few datagrams through the relay; it returns the open client.
func relayThrough(t *testing.T, conn net.PacketConn, server string, echo net.Addr) *turn.Client {
	t.Helper()
	user := fmt.Sprintf("%d:deploy", time.Now().Add(time.Hour).Unix())
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn, Username: user,
		Password: auth.RESTPassword("deploy-test-secret-0123456789abcdef0123456789", user), Realm: "deploy.test",
		LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	rc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate via %s: %v", server, err)
	}
	buf := make([]byte, 64)
	// Longer than 4 bytes: pion's STUNConn (TCP) waits for at least 9 buffered bytes
	// before it parses a frame, so an 8-byte ChannelData frame alone would sit unread.
	msg := "ping through the relay"
	for i := 0; i < 3; i++ {
		if _, err := rc.WriteTo([]byte(msg), echo); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, _, err := rc.ReadFrom(buf); err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %d through the relay via %s: %q %v", i, server, buf[:n], err)
		}
	}
	return c
}
