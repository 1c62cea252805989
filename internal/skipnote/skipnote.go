// Package skipnote makes a test that skips for want of a tool hard to miss. `go test
// ./...` prints nothing of a package whose tests pass but "ok", so a browser test skipped
// because `npm ci` was never run looks like a browser test that passed.
//
// Outside CI, Skip records why a test skipped and the command that would let it run, and
// Report, called by the package's TestMain after m.Run (Main does both), prints one
// line for each. In CI
// (CI=true) every tool must be installed: Skip fails the test instead.
package skipnote

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type note struct{ test, what, enable string }

var (
	mu    sync.Mutex
	notes []note
)

// Skip skips t because what is missing (e.g. "chromium not found"); enable is the
// command that provides it (e.g. "apt-get install chromium"). In CI it fails t instead.
func Skip(t testing.TB, what, enable string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: CI must provide it: %s (see .ci/run)", what, enable)
	}
	test, _, _ := strings.Cut(t.Name(), "/") // subtests skip for their parent's reason
	mu.Lock()
	notes = append(notes, note{test, what, enable})
	mu.Unlock()
	t.Skipf("%s; to run it: %s", what, enable)
}

// Main is a TestMain for a package with nothing else to set up: it runs the tests,
// reports what they skipped and exits with their result.
func Main(m *testing.M, pkg string) {
	code := m.Run()
	Report(pkg)
	os.Exit(code)
}

// Report prints one line per reason a test of pkg skipped for, naming the tests and the
// command that enables them. `go test ./...` discards a passing package's output, stderr
// included, so the line goes where the person running go test looks: the go command's
// own stderr when go test started this binary (a terminal or a CI log alike), else the
// terminal, else stderr (which `go test -v` and failures show).
func Report(pkg string) {
	lines := reportLines(pkg)
	if len(lines) == 0 {
		return
	}
	var w io.Writer = os.Stderr
	if out := visibleOutput(); out != nil {
		defer out.Close()
		w = out
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// reportLines groups the notes by reason, in the order they were first taken.
func reportLines(pkg string) []string {
	mu.Lock()
	defer mu.Unlock()
	type reason struct{ what, enable string }
	var order []reason
	tests := map[reason][]string{}
	for _, n := range notes {
		r := reason{n.what, n.enable}
		if _, seen := tests[r]; !seen {
			order = append(order, r)
		}
		if ts := tests[r]; len(ts) == 0 || ts[len(ts)-1] != n.test {
			tests[r] = append(ts, n.test)
		}
	}
	lines := make([]string, len(order))
	for i, r := range order {
		lines[i] = fmt.Sprintf("SKIPPED in %s: %s (%s); to run: %s", pkg, strings.Join(tests[r], ", "), r.what, r.enable)
	}
	return lines
}

// visibleOutput opens the go command's standard error when it is this process's parent
// (Linux: through /proc), or else the controlling terminal; nil if neither opens.
func visibleOutput() *os.File {
	parent := fmt.Sprintf("/proc/%d/", os.Getppid())
	if exe, err := os.Readlink(parent + "exe"); err == nil && filepath.Base(exe) == "go" {
		if f, err := os.OpenFile(parent+"fd/2", os.O_WRONLY|os.O_APPEND, 0); err == nil {
			return f
		}
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		return tty
	}
	return nil
}
