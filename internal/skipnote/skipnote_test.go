package skipnote

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestHelperSkips is the test a child process runs: two tests missing chromium, one
// missing npm packages, then the report.
func TestHelperSkips(t *testing.T) {
	if os.Getenv("SKIPNOTE_CHILD") == "" {
		t.Skip("run by TestSkipReport in a child process")
	}
	for _, name := range []string{"TestBrowser", "TestNATLab"} {
		t.Run(name, func(t *testing.T) {
			t.Run("sub", func(t *testing.T) { Skip(t, "chromium not found", "apt-get install chromium") })
		})
	}
	t.Run("TestBrowser", func(t *testing.T) { Skip(t, "e2e/browser/node_modules missing", "(cd e2e/browser && npm ci)") })
	Report("e2e")
}

func child(t *testing.T, ci string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSkips$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SKIPNOTE_CHILD=1", "CI="+ci)
	// A session of its own has no controlling terminal: the report goes to stderr.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSkipReport: outside CI the skipped tests pass and one line per reason names the
// tests and the command that enables them; with CI=true they fail.
func TestSkipReport(t *testing.T) {
	out, err := child(t, "")
	if err != nil {
		t.Fatalf("outside CI: %v\n%s", err, out)
	}
	for _, want := range []string{
		"SKIPPED in e2e: TestHelperSkips (chromium not found); to run: apt-get install chromium\n",
		"SKIPPED in e2e: TestHelperSkips (e2e/browser/node_modules missing); to run: (cd e2e/browser && npm ci)\n",
	} {
		if strings.Count(out, want) != 1 {
			t.Errorf("output does not have exactly one line %q:\n%s", want, out)
		}
	}

	out, err = child(t, "true")
	if err == nil || !strings.Contains(out, "chromium not found: CI must provide it: apt-get install chromium (see .ci/run)") {
		t.Errorf("CI=true: %v\n%s", err, out)
	}
	if strings.Contains(out, "SKIPPED in") {
		t.Errorf("CI=true reported skips:\n%s", out)
	}
}
