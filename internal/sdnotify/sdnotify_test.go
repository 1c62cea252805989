package sdnotify

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen opens a unixgram socket at name (a path or an @abstract name) and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// recv reads one datagram, failing the test if none comes within 2 s.
func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

// nothingMore fails if another datagram is waiting: each call must send exactly one.
func nothingMore(t *testing.T, c *net.UnixConn) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("unexpected extra datagram %q", buf[:n])
	}
}

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000
}

// TestDatagrams: every helper sends exactly one datagram with exactly the assignments
// systemd expects, to a socket given as a filesystem path.
func TestDatagrams(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	for _, tc := range []struct {
		name string
		send func() error
		want string
	}{
		{"Ready", Ready, "READY=1"},
		{"Stopping", Stopping, "STOPPING=1"},
		{"Watchdog", Watchdog, "WATCHDOG=1"},
		{"Status", func() error { return Status("serving 3 listeners") }, "STATUS=serving 3 listeners"},
		{"StatusNewlines", func() error { return Status("a\nREADY=1\r\nb") }, "STATUS=a READY=1 b"},
		{"Notify", func() error { return Notify("STATUS=x\nREADY=1") }, "STATUS=x\nREADY=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c); got != tc.want {
				t.Fatalf("datagram %q, want %q", got, tc.want)
			}
			nothingMore(t, c)
		})
	}
}

// TestReloadingCarriesMonotonicTime: RELOADING=1 comes with MONOTONIC_USEC read from
// CLOCK_MONOTONIC at the time of the call (systemd >= 253 rejects the reload otherwise).
func TestReloadingCarriesMonotonicTime(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	before := monotonicNow(t)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicNow(t)
	got := recv(t, c)
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("datagram %q, want RELOADING=1\\nMONOTONIC_USEC=<n>", got)
	}
	usec, _ := strconv.ParseUint(m[1], 10, 64)
	if usec < before || usec > after {
		t.Fatalf("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC at the call (between %d and %d)", usec, before, after)
	}
	nothingMore(t, c)
}

// TestAbstractSocket: a NOTIFY_SOCKET starting with '@' is an abstract-namespace name,
// as systemd hands out; nothing is created on the filesystem.
func TestAbstractSocket(t *testing.T) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "@relay-sdnotify-test-" + hex.EncodeToString(b[:])
	dir := t.TempDir()
	t.Chdir(dir) // a path-based bind or send of "@..." would be relative to here
	c := listen(t, name)
	// The listener really is abstract: the kernel lists it with a leading '@'.
	if !procNetUnixHas(t, name) {
		t.Fatalf("%s is not in /proc/net/unix: the test listener is not abstract", name)
	}
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "READY=1" {
		t.Fatalf("datagram %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files appeared in the working directory: %v", entries)
	}
}

func procNetUnixHas(t *testing.T, name string) bool {
	t.Helper()
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Skipf("no /proc/net/unix: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 && fields[len(fields)-1] == name {
			return true
		}
	}
	return false
}

// TestUnsetIsNoop: without NOTIFY_SOCKET (relay not under systemd) every call succeeds
// and does nothing.
func TestUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, unset := range []bool{false, true} {
		if unset {
			_ = os.Unsetenv("NOTIFY_SOCKET")
		}
		for name, f := range map[string]func() error{
			"Notify": func() error { return Notify("READY=1") }, "Ready": Ready, "Stopping": Stopping,
			"Reloading": Reloading, "Watchdog": Watchdog, "Status": func() error { return Status("x") },
		} {
			if err := f(); err != nil {
				t.Errorf("%s with NOTIFY_SOCKET unset=%v: %v", name, unset, err)
			}
		}
	}
}

// TestErrors: a set but unusable NOTIFY_SOCKET is reported, not silently ignored.
func TestErrors(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "nobody-listens.sock"),
		"relative.sock",
		"vsock:2:1234",
	} {
		t.Setenv("NOTIFY_SOCKET", name)
		if err := Ready(); err == nil {
			t.Errorf("NOTIFY_SOCKET=%q: no error", name)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := os.Getpid()
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, true},
		{"30000000", strconv.Itoa(pid), 30 * time.Second, true},
		{"15000000", strconv.Itoa(pid + 1), 0, false}, // meant for another process
		{"1500", "", 1500 * time.Microsecond, true},
		{"0", "", 0, false},
		{"-5", "", 0, false},
		{"30s", "", 0, false},
		{"18446744073709551615", "", 0, false},
		{"30000000", "abc", 0, false},
		{"30000000", "0", 0, false},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, ok := WatchdogInterval()
		if got != tc.want || ok != tc.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: (%v, %v), want (%v, %v)", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
	}
	_ = os.Unsetenv("WATCHDOG_USEC")
	_ = os.Unsetenv("WATCHDOG_PID")
	if d, ok := WatchdogInterval(); ok || d != 0 {
		t.Errorf("unset: (%v, %v)", d, ok)
	}
}
