// Package sdnotify implements the client side of systemd's service notification
// protocol (sd_notify(3)), so that relay can run as a Type=notify service: it says when
// it is ready, reloading or stopping, and keeps the service watchdog fed.
//
// The protocol is one datagram per notification, newline-separated VAR=value
// assignments, sent to the AF_UNIX datagram socket named by $NOTIFY_SOCKET. A name
// starting with '@' is in the abstract namespace. When $NOTIFY_SOCKET is unset (relay
// started by hand, in a container, by another supervisor) every function here does
// nothing and returns nil, so callers can notify unconditionally.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notify sends state, for example "READY=1" or "STATUS=serving\nREADY=1", to the
// service manager in one datagram. It returns nil without doing anything when
// $NOTIFY_SOCKET is unset or empty, and an error when the socket is set but the
// datagram could not be delivered in full.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	// Only absolute paths and abstract names are unix sockets; sd_notify(3) refuses the
	// rest too (newer systemd also knows "vsock:", which a host service never gets).
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q: want an absolute path or @abstract name", name)
	}
	// On Linux, Go maps a leading '@' to the abstract namespace (a leading NUL byte, with
	// the address length not counting a trailing NUL), which is what systemd means by it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	n, err := conn.Write([]byte(state))
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	if n != len(state) {
		return fmt.Errorf("sdnotify: short write: %d of %d bytes", n, len(state))
	}
	return nil
}

// Ready tells systemd that startup is finished: every listener is open and serving.
func Ready() error { return Notify("READY=1") }

// Stopping tells systemd that relay has begun shutting down (draining).
func Stopping() error { return Notify("STOPPING=1") }

// Reloading tells systemd that relay is reloading its configuration; send Ready when
// the reload is done, whatever its outcome. The datagram carries MONOTONIC_USEC, the
// current CLOCK_MONOTONIC time in microseconds, which systemd 253 and later require for
// Type=notify-reload services; older managers ignore it.
func Reloading() error {
	usec, ok := monotonicUsec()
	if !ok {
		return Notify("RELOADING=1")
	}
	return Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10))
}

// Watchdog feeds the service watchdog (WatchdogSec= in the unit).
func Watchdog() error { return Notify("WATCHDOG=1") }

// Status sets the one-line status `systemctl status` shows. Newlines would start new
// assignments in the datagram, so they are replaced with spaces.
func Status(s string) error {
	return Notify("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// WatchdogInterval reports whether systemd expects watchdog notifications from this
// process, and the watchdog timeout (the unit's WatchdogSec=) taken from $WATCHDOG_USEC.
// If $WATCHDOG_PID is set it must be this process's pid, otherwise the watchdog is meant
// for another process (a parent that exec'd us, or a child that inherited the
// environment) and the answer is false. Call Watchdog more often than the timeout;
// systemd recommends every half of it.
func WatchdogInterval() (time.Duration, bool) {
	d, err := watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
	if err != nil {
		return 0, false
	}
	return d, true
}

var errNoWatchdog = errors.New("sdnotify: watchdog not enabled")

func watchdogInterval(usecEnv, pidEnv string, pid int) (time.Duration, error) {
	if usecEnv == "" {
		return 0, errNoWatchdog
	}
	usec, err := strconv.ParseUint(usecEnv, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC=%q: %w", usecEnv, err)
	}
	// Zero means off; beyond what a Duration holds is not a usable interval either.
	if usec == 0 || usec > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC=%q out of range", usecEnv)
	}
	if pidEnv != "" {
		p, err := strconv.Atoi(pidEnv)
		if err != nil || p <= 0 {
			return 0, fmt.Errorf("sdnotify: WATCHDOG_PID=%q is not a pid", pidEnv)
		}
		if p != pid {
			return 0, fmt.Errorf("sdnotify: WATCHDOG_PID=%d is not this process (%d)", p, pid)
		}
	}
	return time.Duration(usec) * time.Microsecond, nil
}
