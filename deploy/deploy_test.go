package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/skipnote"
)

const unitFile = "systemd/relay.service"

// need finds an external program; in CI (CI=true) a missing one fails the test instead
// of skipping it (skipnote).
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		skipnote.Skip(t, name+" not found", "apt-get install "+pkg)
	}
	return path
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// relayBinary builds ../cmd/relay once per test run.
func relayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "relay-deploy-test-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "relay"), "../cmd/relay").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/relay: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "relay")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if releasesDir != "" { // deb_test.go
		_ = os.RemoveAll(releasesDir)
	}
	skipnote.Report("deploy")
	os.Exit(code)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitForTest is the shipped unit with ExecStart pointing at a freshly built relay, so
// that systemd-analyze can check the binary exists and is executable.
func unitForTest(t *testing.T) string {
	t.Helper()
	unit := readFile(t, unitFile)
	const shipped = "ExecStart=/usr/local/bin/relay "
	if strings.Count(unit, shipped) != 1 {
		t.Fatalf("%s: want exactly one %q line", unitFile, shipped)
	}
	return strings.Replace(unit, shipped, "ExecStart="+relayBinary(t)+" ", 1)
}

// verify runs systemd-analyze verify on unit text saved as relay.service in a fresh
// directory, and returns its combined output and whether it passed. It passes only with
// exit status 0 and no diagnostics about the file.
func verify(t *testing.T, analyze, unit string) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return verifyFile(analyze, path)
}

// verifyFile is verify of the unit file at path, as it is.
func verifyFile(analyze, path string) (string, bool) {
	args := []string{"verify", "--man=no"}
	if help, _ := exec.Command(analyze, "--help").Output(); bytes.Contains(help, []byte("--recursive-errors")) {
		// Judge this unit, not whatever other units the host has installed.
		args = append(args, "--recursive-errors=no")
	}
	// A file argument is loaded from that path even if the host has a relay.service
	// installed (checked by hand with a broken /etc/systemd/system/relay.service).
	cmd := exec.Command(analyze, append(args, path)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	clean := err == nil && !strings.Contains(string(out), "relay.service")
	return string(out), clean
}

// TestSystemdUnitVerifies: systemd itself accepts the shipped unit (every directive
// known, every value valid, ExecStart executable), and rejects deliberately broken
// copies of it, which shows the check can fail.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	unit := unitForTest(t)
	if out, ok := verify(t, analyze, unit); !ok {
		t.Fatalf("systemd-analyze verify %s failed:\n%s", unitFile, out)
	}
	for _, tc := range []struct{ name, old, new string }{
		{"unknown directive", "Restart=on-failure\n", "Restart=on-failure\nRestartt=always\n"},
		{"bad Type", "Type=notify\n", "Type=notifyy\n"},
		{"bad duration", "TimeoutStopSec=45s\n", "TimeoutStopSec=forty-five\n"},
		{"bad ProtectSystem", "ProtectSystem=strict\n", "ProtectSystem=stricter\n"},
		{"bad address family", "RestrictAddressFamilies=AF_INET ", "RestrictAddressFamilies=AF_INETT "},
		{"missing binary", "ExecStart=" + relayBinary(t), "ExecStart=" + relayBinary(t) + "-missing"},
		{"misspelt section", "[Service]\n", "[Servic]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(unit, tc.old) {
				t.Fatalf("unit has no %q to break", tc.old)
			}
			if out, ok := verify(t, analyze, strings.Replace(unit, tc.old, tc.new, 1)); ok {
				t.Fatalf("systemd-analyze verify accepted a unit with a %s:\n%s", tc.name, out)
			}
		})
	}
}

// TestSystemdUnitSecurity: systemd's own exposure score of the unit stays "OK" (at most
// 2.0 of 10), so a hardening directive removed by mistake shows up.
func TestSystemdUnitSecurity(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	if help, _ := exec.Command(analyze, "security", "--help").Output(); !bytes.Contains(help, []byte("--offline")) {
		t.Skip("systemd-analyze security --offline needs systemd >= 250")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(path, []byte(unitForTest(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	// --threshold is in tenths of the displayed 0-10 scale.
	out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", path).CombinedOutput()
	score := regexp.MustCompile(`Overall exposure level for relay.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || score == nil {
		t.Fatalf("systemd-analyze security: exposure above 2.0 (or it failed): %v\n%s", err, out)
	}
	t.Logf("exposure level %s", score[1])
}

// unitSettings parses a unit file into section -> key -> values (keys may repeat).
func unitSettings(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unparsable unit line %q", line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemdUnitContract: the settings other parts of relay and the docs rely on. relay
// sends READY=1/STOPPING=1/WATCHDOG=1 (Type=notify, WatchdogSec); systemd must wait out
// the drain (TimeoutStopSec > drain_timeout); reload is SIGHUP; the hardening the README
// promises is there.
func TestSystemdUnitContract(t *testing.T) {
	s := unitSettings(t, readFile(t, unitFile))
	svc := s["Service"]
	for key, want := range map[string]string{
		"Type":                    "notify",
		"ExecStart":               "/usr/local/bin/relay -config /etc/relay/relay.toml -require-secret",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"User":                    "relay",
		"Group":                   "relay",
		"WatchdogSec":             "30s",
		"Restart":                 "on-failure",
		"RestartSec":              "2s",
		"LimitNOFILE":             "65536",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictNamespaces":      "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"RestrictRealtime":        "yes",
		"SystemCallArchitectures": "native",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"ReadOnlyPaths":           "/etc/relay",
		"StateDirectory":          "relay",
		"StateDirectoryMode":      "0750",
	} {
		if got := svc[key]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s = %q, want %q", key, got, want)
		}
	}
	// relay -require-secret exits 78 without a secret: restarting cannot help.
	if got := svc["RestartPreventExitStatus"]; len(got) != 1 || got[0] != "78" {
		t.Errorf("[Service] RestartPreventExitStatus = %q, want 78", got)
	}
	stop, err := time.ParseDuration(strings.Join(svc["TimeoutStopSec"], ""))
	if err != nil {
		t.Fatalf("TimeoutStopSec %q: %v", svc["TimeoutStopSec"], err)
	}
	// relay drains for up to [turn] drain_timeout, then needs a moment to close.
	drain := config.Default().TURN.DrainTimeout
	if stop < drain+10*time.Second {
		t.Errorf("TimeoutStopSec=%v leaves no room after the default drain_timeout %v: systemd would SIGKILL relay mid-drain", stop, drain)
	}
	if got := s["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q", got)
	}
}

// TestSysusers: systemd-sysusers accepts deploy/sysusers.d/relay.conf and creates a
// system user and group "relay" with no login shell (run against a scratch root).
func TestSysusers(t *testing.T) {
	sysusers := need(t, "systemd-sysusers", "systemd")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, _ := filepath.Abs("sysusers.d/relay.conf")
	if out, err := exec.Command(sysusers, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	var user []string
	for _, line := range strings.Split(readFile(t, filepath.Join(root, "etc/passwd")), "\n") {
		if f := strings.Split(line, ":"); len(f) == 7 && f[0] == "relay" {
			user = f
		}
	}
	if user == nil {
		t.Fatalf("no relay user in %s/etc/passwd", root)
	}
	var uid int
	fmt.Sscan(user[2], &uid)
	if uid <= 0 || uid >= 1000 {
		t.Errorf("relay uid %d is not a system uid", uid)
	}
	if user[6] != "/usr/sbin/nologin" && user[6] != "/sbin/nologin" {
		t.Errorf("relay shell %q, want nologin", user[6])
	}
	if !strings.Contains(readFile(t, filepath.Join(root, "etc/group")), "relay:x:"+user[3]+":") {
		t.Errorf("no relay group with gid %s", user[3])
	}
}

// TestREADMEConfigLoads: the production settings deploy/README.md tells operators to put
// in /etc/relay/relay.toml parse and validate, once the placeholders are filled in.
func TestREADMEConfigLoads(t *testing.T) {
	readme := readFile(t, "README.md")
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```toml block")
	}
	snippet := strings.ReplaceAll(m[1], "<the output of openssl rand -hex 32>", strings.Repeat("ab", 32))
	cfg, err := config.Parse([]byte(snippet), "README.md")
	if err != nil {
		t.Fatalf("README's relay.toml does not load:\n%v\n%s", err, snippet)
	}
	if cfg.TURN.PublicIP.String() != "203.0.113.10" || cfg.TURN.RelayIP.String() != "10.0.0.5" {
		t.Errorf("relay_ip/public_ip parsed as %v/%v", cfg.TURN.RelayIP, cfg.TURN.PublicIP)
	}
	if len(cfg.Auth.Secrets) != 1 || cfg.Metrics.Listen != "127.0.0.1:9641" {
		t.Errorf("secrets %d, metrics %q: the README config must keep metrics on loopback", len(cfg.Auth.Secrets), cfg.Metrics.Listen)
	}

	// The recommended install: TURN over TLS and signaling on one port, 443, with the
	// certificate by ACME, and nothing else on TCP.
	if !cfg.TLS.ACME() || !cfg.SharedPort(":443") || cfg.Signal.Listen != ":443" || len(cfg.TURN.TCP) != 0 {
		t.Errorf("step 3's relay.toml is not the one-port ACME install: tls %v, signal.listen %q, tcp %v, acme %v",
			cfg.TURN.TLS, cfg.Signal.Listen, cfg.TURN.TCP, cfg.TLS.ACMEDomains)
	}
	// Loading it (Load, as relay starts) needs no certificate file: ACME brings one.
	path := filepath.Join(t.TempDir(), "relay.toml")
	writeFile(t, path, snippet)
	if _, err := config.Load(path); err != nil {
		t.Errorf("step 3's relay.toml does not load:\n%v", err)
	}
	// Step 6's alternative: certificate files from an ACME client instead.
	files := strings.Replace(snippet, `acme_domains = ["turn.example.org"]`, `acme_domains = []`, 1)
	files = strings.Replace(files, "[signal]\n", "[signal]\ntls_cert = \"/etc/relay/tls/fullchain.pem\"\ntls_key = \"/etc/relay/tls/privkey.pem\"\n", 1)
	cfg, err = config.Parse([]byte(files), "README.md")
	if err != nil {
		t.Fatalf("step 3's relay.toml with step 6's certificate files does not load:\n%v", err)
	}
	if cfg.TLS.ACME() || cfg.Signal.TLSCert == "" || !cfg.SharedPort(":443") {
		t.Errorf("with certificate files: acme %v, signal.tls_cert %q, shared %v", cfg.TLS.ACMEDomains, cfg.Signal.TLSCert, cfg.SharedPort(":443"))
	}
	if !strings.Contains(readme, "tls_cert = \"/etc/relay/tls/fullchain.pem\"\ntls_key = \"/etc/relay/tls/privkey.pem\"") {
		t.Error("README.md step 6 no longer shows the [signal] tls_cert/tls_key lines this test adds")
	}
}

// TestCertHook runs deploy/acme/relay-cert-hook as certbot and as lego would: the
// certificate and key land in RELAY_TLS_DIR with mode 0640 and the relay group, no
// temporary files stay behind, and relay is reloaded only when it runs.
func TestCertHook(t *testing.T) {
	hook, _ := filepath.Abs("acme/relay-cert-hook")
	group := "root"
	if os.Getgid() != 0 {
		out, err := exec.Command("id", "-gn").Output()
		if err != nil {
			t.Fatal(err)
		}
		group = strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		name    string
		active  bool
		env     func(src string) []string
		wantRun string
	}{
		{"certbot", true, func(src string) []string { return []string{"RENEWED_LINEAGE=" + src} }, "is-active --quiet relay\nreload relay\n"},
		{"lego", false, func(src string) []string {
			return []string{"LEGO_CERT_PATH=" + filepath.Join(src, "fullchain.pem"), "LEGO_CERT_KEY_PATH=" + filepath.Join(src, "privkey.pem")}
		}, "is-active --quiet relay\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dest, bin := t.TempDir(), filepath.Join(t.TempDir(), "tls"), t.TempDir()
			writeFile(t, filepath.Join(src, "fullchain.pem"), "CERT "+tc.name)
			writeFile(t, filepath.Join(src, "privkey.pem"), "KEY "+tc.name)
			// A systemctl stand-in that records its arguments.
			status := "0"
			if !tc.active {
				status = "3"
			}
			calls := filepath.Join(bin, "calls")
			writeFile(t, filepath.Join(bin, "systemctl"), "#!/bin/sh\necho \"$*\" >>"+calls+"\n[ \"$1\" = is-active ] && exit "+status+"\nexit 0\n")
			if err := os.Chmod(filepath.Join(bin, "systemctl"), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(hook)
			cmd.Env = append(tc.env(src), "PATH="+bin+":"+os.Getenv("PATH"), "RELAY_TLS_DIR="+dest, "RELAY_GROUP="+group)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("hook: %v\n%s", err, out)
			}
			for name, want := range map[string]string{"fullchain.pem": "CERT " + tc.name, "privkey.pem": "KEY " + tc.name} {
				p := filepath.Join(dest, name)
				if got := readFile(t, p); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
					t.Errorf("%s mode %v, want 0640 (%v)", name, fi.Mode().Perm(), err)
				}
			}
			if entries, _ := os.ReadDir(dest); len(entries) != 2 {
				t.Errorf("%s holds %d entries, want the two PEM files", dest, len(entries))
			}
			if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o750 {
				t.Errorf("%s mode %v, want 0750", dest, fi.Mode().Perm())
			}
			if got := readFile(t, calls); got != tc.wantRun {
				t.Errorf("systemctl calls %q, want %q", got, tc.wantRun)
			}
		})
	}
	t.Run("no ACME environment", func(t *testing.T) {
		cmd := exec.Command(hook)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "RELAY_TLS_DIR=" + t.TempDir()}
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("hook succeeded without certbot or lego variables:\n%s", out)
		}
	})
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestREADMEFleetConfigLoads: the [cluster] block of the fleet section parses, and its
// password file is read at load (here a stand-in file) without being shown.
func TestREADMEFleetConfigLoads(t *testing.T) {
	readme := readFile(t, "README.md")
	i := strings.Index(readme, "## 11. A fleet")
	if i < 0 {
		t.Fatal("README.md has no fleet section")
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(readme[i:])
	if m == nil {
		t.Fatal("the fleet section has no ```toml block")
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "redis-password")
	writeFile(t, pw, "fleet-secret-password\n")
	snippet := strings.ReplaceAll(m[1], "/etc/relay/redis-password", pw)
	path := filepath.Join(dir, "relay.toml")
	writeFile(t, path, snippet)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the fleet section's [cluster] does not load:\n%v\n%s", err, snippet)
	}
	c := cfg.Cluster
	if !c.Enabled() || !strings.HasPrefix(c.Redis, "rediss://") || c.Password != "fleet-secret-password" || c.NodeName() != "relay1" || c.ICENodes != 2 {
		t.Errorf("fleet config parsed as %+v", c)
	}
}
