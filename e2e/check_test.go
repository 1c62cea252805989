package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// checkSteps are the lines `relay check` prints for a passing turn: URL.
var checkSteps = []string{"STUN Binding", "Allocate", "Allocate (second)", "CreatePermission", "relay round trip", "Release"}

// runCheck runs `relay check args...` and returns its output and exit status.
func runCheck(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := runFor(t, time.Minute, relayBin, append([]string{"check"}, args...)...)
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("relay check %s → exit %d\n%s", strings.Join(args, " "), code, out)
	return out, code
}

// runFor runs name with args and returns its output (stdout and stderr) and exit error;
// it fails the test if the program does not finish within limit.
func runFor(t *testing.T, limit time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s did not finish in %v:\n%s", filepath.Base(name), strings.Join(args, " "), limit, tail(out.String(), 30))
	}
	return "", nil
}

// wantPass asserts exit 0, PASS, and every step ok for each turn: URL in urls.
func wantPass(t *testing.T, out string, code int, urls ...string) {
	t.Helper()
	if code != 0 || !strings.HasSuffix(out, "\nPASS\n") {
		t.Fatalf("want exit 0 and PASS, got exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("a step failed:\n%s", out)
	}
	for _, u := range urls {
		i := strings.Index(out, u+"\n")
		if i < 0 {
			t.Errorf("output lacks the URL %s", u)
			continue
		}
		section := out[i:]
		for _, s := range checkSteps {
			if !strings.Contains(section, "  ok    "+s+" ") {
				t.Errorf("%s: no passing %q step", u, s)
			}
		}
	}
}

// TestCheckAgainstRelay: `relay check` against a running relay, by TURN URL and by its
// ICE endpoint, and with a wrong secret.
func TestCheckAgainstRelay(t *testing.T) {
	p := startRelay(t, baseConfig(""))
	udp := "turn:" + p.addr("udp") + "?transport=udp"
	tcp := "turn:" + p.addr("tcp") + "?transport=tcp"

	t.Run("udp", func(t *testing.T) {
		out, code := runCheck(t, udp, "-secret", e2eSecret)
		wantPass(t, out, code, udp)
		if !strings.Contains(out, "(lifetime 600 s)") || !strings.Contains(out, "5/5 datagrams through two allocations") {
			t.Errorf("missing details:\n%s", out)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		// Flags may come before the URL too.
		out, code := runCheck(t, "-secret", e2eSecret, "-user", "e2e-check", tcp)
		wantPass(t, out, code, tcp)
		if !strings.Contains(out, "  ok    TCP connect ") {
			t.Errorf("no TCP connect step:\n%s", out)
		}
	})
	t.Run("ice", func(t *testing.T) {
		ice := "http://" + p.addr("signal") + "/ice"
		out, code := runCheck(t, ice)
		wantPass(t, out, code, udp, tcp)
		for _, want := range []string{ice + "\n  ok    ICE endpoint ", "stun:" + p.addr("udp") + "\n  ok    STUN Binding "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
	t.Run("wrong-secret", func(t *testing.T) {
		out, code := runCheck(t, udp, "-secret", "not-the-secret")
		if code != 1 || !strings.Contains(out, "401 Unauthorized") || !strings.HasSuffix(out, "\nFAIL\n") {
			t.Fatalf("want exit 1 with 401 Unauthorized and FAIL, got exit %d:\n%s", code, out)
		}
		if !strings.Contains(out, "  FAIL  Allocate ") {
			t.Errorf("the Allocate step should be the failing one:\n%s", out)
		}
	})
	t.Run("usage", func(t *testing.T) {
		if out, code := runCheck(t, udp); code != 2 || !strings.Contains(out, "needs credentials") {
			t.Errorf("no credentials: want exit 2, got %d:\n%s", code, out)
		}
		if out, code := runCheck(t, "-secret", "x"); code != 2 || !strings.Contains(out, "Usage:") {
			t.Errorf("no URL: want exit 2 and the usage, got %d:\n%s", code, out)
		}
	})
	// Every allocation the checks made was released.
	waitFor(t, "the checks' allocations to end", func() bool {
		m := p.metrics()
		return m[`relay_turn_allocations_active{transport="udp"}`]+m[`relay_turn_allocations_active{transport="tcp"}`] == 0
	})
}

// TestCheckAgainstCoturn: `relay check` passes against a loopback coturn with the same kind
// of shared secret: the check speaks plain RFC 8656, not just relay's dialect.
func TestCheckAgainstCoturn(t *testing.T) {
	turnserver := need(t, "turnserver", "coturn")
	const secret = "coturn-check-secret"
	port := freeUDPTCPPort(t)
	minPort := freeUDPRange(t, 32)
	dir := t.TempDir()
	cmd := exec.Command(turnserver, "-n", "--no-cli", "--no-tls", "--no-dtls",
		"--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port="+strconv.Itoa(port),
		"--min-port="+strconv.Itoa(minPort), "--max-port="+strconv.Itoa(minPort+31),
		"--use-auth-secret", "--static-auth-secret="+secret, "--realm=coturn.e2e", "--fingerprint",
		"--allow-loopback-peers", "--log-file=stdout", "--simple-log",
		"--pidfile="+filepath.Join(dir, "turnserver.pid"), "--userdb="+filepath.Join(dir, "turndb"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, "coturn to answer STUN on "+addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("turnserver exited:\n%s", log.String())
		default:
		}
		return stunAnswers(addr)
	})
	for _, tr := range []string{"udp", "tcp"} {
		url := "turn:" + addr + "?transport=" + tr
		out, code := runCheck(t, url, "-secret", secret)
		wantPass(t, out, code, url)
	}
	out, code := runCheck(t, "turn:"+addr, "-secret", "wrong")
	if code != 1 || !strings.Contains(out, "401 Unauthorized") {
		t.Errorf("coturn with a wrong secret: want exit 1 and 401 Unauthorized, got %d:\n%s", code, out)
	}
}

// stunAnswers sends one STUN Binding request over UDP and says whether a response came.
func stunAnswers(addr string) bool {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(m.Raw); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return false
	}
	res := &stun.Message{Raw: buf[:n]}
	return res.Decode() == nil && res.TransactionID == m.TransactionID
}

// freeUDPTCPPort finds a port free for both UDP and TCP on 127.0.0.1.
func freeUDPTCPPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

// freeUDPRange finds n consecutive free UDP ports in 40000-48999, clear of relay's test
// ranges (61000-61999, 63000-63499) and of 50000-50999, which a shared machine may use.
func freeUDPRange(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 40000 + rand.IntN(9000-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				ok = false
				break
			}
			_ = u.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free UDP ports", n)
	return 0
}
