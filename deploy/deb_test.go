package deploy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/skipnote"
)

// Two releases for the install test: the second is an upgrade of the first, and a
// pre-release (0.9.0~rc.1 for dpkg) must sort before its release (0.9.0).
const (
	debV1 = "v0.9.0-rc.1"
	debV2 = "v0.9.0"
)

var (
	releasesMu  sync.Mutex
	releases    = map[string]string{} // version -> its dist directory
	releasesDir string                // removed by TestMain
)

// release runs deploy/release.sh for version once per test run and returns its dist
// directory. debV1 is built for both architectures (arm64 only has to build and lint),
// later versions for this machine's only, to keep the run short.
func release(t *testing.T, version string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds release binaries and packages; skipped with -short")
	}
	releasesMu.Lock()
	defer releasesMu.Unlock()
	if dist, ok := releases[version]; ok {
		if dist == "" {
			t.Fatalf("deploy/release.sh %s failed earlier", version)
		}
		return dist
	}
	releases[version] = ""
	var err error
	if releasesDir == "" {
		if releasesDir, err = os.MkdirTemp("", "relay-release-test-"); err != nil {
			t.Fatal(err)
		}
	}
	dist := filepath.Join(releasesDir, version)
	archs := runtime.GOARCH
	if version == debV1 {
		archs = "amd64 arm64"
	}
	start := time.Now()
	cmd := exec.Command("./release.sh", version)
	cmd.Env = append(os.Environ(), "ARCHS="+archs, "DIST="+dist, "REVISION="+revisionOf(version))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/release.sh %s: %v\n%s", version, err, out)
	}
	t.Logf("deploy/release.sh %s (%s) took %v:\n%s", version, archs, time.Since(start).Round(time.Millisecond), out)
	releases[version] = dist
	return dist
}

func revisionOf(version string) string { return "deb-test-revision-" + version }

// debVersion is dpkg's spelling of a Go version (release.sh): no v, ~ for -.
func debVersion(version string) string {
	return strings.ReplaceAll(strings.TrimPrefix(version, "v"), "-", "~")
}

// TestRelease: deploy/release.sh builds, for amd64 and arm64, a static binary that
// prints the version and revision it was given, and a .deb of that architecture and
// version; SHA256SUMS lists exactly those files with their hashes; lintian finds no
// error in either package, and every warning it gives is one deploy/README.md lists
// with the reason.
func TestRelease(t *testing.T) {
	dist := release(t, debV1)
	lintianBin := need(t, "lintian", "lintian")
	need(t, "dpkg-deb", "dpkg")
	plain := strings.TrimPrefix(debV1, "v")

	var want []string
	for _, arch := range []string{"amd64", "arm64"} {
		bin := filepath.Join(dist, "relay_"+plain+"_linux_"+arch)
		deb := filepath.Join(dist, "relay_"+debVersion(debV1)+"_"+arch+".deb")
		want = append(want, filepath.Base(bin), filepath.Base(deb))

		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
		if f.Machine != machine {
			t.Errorf("%s: ELF machine %v, want %v", bin, f.Machine, machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a program interpreter: not static", bin)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v: not static", bin, libs)
		}
		f.Close()
		if arch == runtime.GOARCH {
			checkVersionOutput(t, bin, debV1)
		}

		out, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture").Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", deb, err)
		}
		if got, w := string(out), "Package: relay\nVersion: "+debVersion(debV1)+"\nArchitecture: "+arch+"\n"; got != w {
			t.Errorf("%s control fields:\n%s\nwant\n%s", deb, got, w)
		}
		lint(t, lintianBin, deb)
	}

	sums := readFile(t, filepath.Join(dist, "SHA256SUMS"))
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(sums), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's format", line)
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS: %s has the wrong hash", name)
		}
		listed = append(listed, name)
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("SHA256SUMS lists %q, want %q", listed, want)
	}
}

// lint runs lintian on deb: no error (the one lintian would raise, a statically linked
// Go binary, is overridden in the package with the reason), and every warning listed in
// deploy/README.md.
func lint(t *testing.T, lintianBin, deb string) {
	t.Helper()
	out, err := exec.Command(lintianBin, "--fail-on", "error", deb).CombinedOutput()
	if err != nil {
		t.Errorf("lintian %s: %v\n%s", filepath.Base(deb), err, out)
	}
	guide := readFile(t, "README.md")
	for _, m := range regexp.MustCompile(`(?m)^([EW]): relay: (\S+)`).FindAllStringSubmatch(string(out), -1) {
		if m[1] == "E" {
			t.Errorf("lintian error %s on %s", m[2], filepath.Base(deb))
		} else if !strings.Contains(guide, "`"+m[2]+"`") {
			t.Errorf("lintian warns %s on %s: deploy/README.md does not list it with the reason", m[2], filepath.Base(deb))
		}
	}
	t.Logf("lintian %s:\n%s", filepath.Base(deb), out)
}

// checkVersionOutput: relay version of bin prints the version and revision release.sh
// stamped in.
func checkVersionOutput(t *testing.T, bin, version string) {
	t.Helper()
	out, err := exec.Command(bin, "version").Output()
	want := fmt.Sprintf("relay %s (revision %s, %s)\n", version, revisionOf(version), runtime.Version())
	if err != nil || string(out) != want {
		t.Errorf("%s version: %q (%v), want %q", bin, out, err, want)
	}
}

// packaged is one path the package installs and what it must be.
type packaged struct {
	path         string
	dir          bool
	mode         fs.FileMode
	owner, group string
	// want is the content: a repository file, or a func of the installed bytes.
	src   string
	check func(t *testing.T, b []byte)
}

// packagedFiles is every path the package owns that is not a plain system directory.
func packagedFiles(t *testing.T, version string) []packaged {
	unit := strings.Replace(readFile(t, unitFile), "ExecStart=/usr/local/bin/relay ", "ExecStart=/usr/bin/relay ", 1)
	gunzipped := func(want string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			r, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(got), want) {
				t.Errorf("gunzipped content has no %q:\n%s", want, got)
			}
		}
	}
	return []packaged{
		{path: "/usr/bin/relay", mode: 0o755, owner: "root", group: "root"},
		{path: "/usr/lib/systemd/system/relay.service", mode: 0o644, owner: "root", group: "root",
			check: func(t *testing.T, b []byte) {
				if string(b) != unit {
					t.Errorf("installed unit is not deploy/systemd/relay.service with ExecStart=/usr/bin/relay:\n%s", b)
				}
			}},
		{path: "/usr/lib/sysusers.d/relay.conf", mode: 0o644, owner: "root", group: "root", src: "sysusers.d/relay.conf"},
		{path: "/etc/relay", dir: true, mode: 0o750, owner: "root", group: "relay"},
		{path: "/etc/relay/relay.toml", mode: 0o640, owner: "root", group: "relay"}, // content: checked by the test
		{path: "/var/lib/relay", dir: true, mode: 0o750, owner: "relay", group: "relay"},
		{path: "/usr/share/relay/grafana/relay.json", mode: 0o644, owner: "root", group: "root", src: "grafana/relay.json"},
		{path: "/usr/share/relay/prometheus/prometheus.yml", mode: 0o644, owner: "root", group: "root", src: "prometheus/prometheus.yml"},
		{path: "/usr/share/relay/prometheus/relay-alerts.yml", mode: 0o644, owner: "root", group: "root", src: "prometheus/relay-alerts.yml"},
		{path: "/usr/share/relay/prometheus/relay-alerts_test.yml", mode: 0o644, owner: "root", group: "root", src: "prometheus/relay-alerts_test.yml"},
		{path: "/usr/share/relay/acme/relay-cert-hook", mode: 0o755, owner: "root", group: "root", src: "acme/relay-cert-hook"},
		{path: "/usr/share/man/man1/relay.1.gz", mode: 0o644, owner: "root", group: "root",
			check: gunzipped(readFile(t, "deb/relay.1"))},
		{path: "/usr/share/doc/relay/copyright", mode: 0o644, owner: "root", group: "root", src: "deb/copyright"},
		{path: "/usr/share/doc/relay/changelog.gz", mode: 0o644, owner: "root", group: "root",
			check: gunzipped("relay (" + debVersion(version) + ") unstable; urgency=medium")},
		{path: "/usr/share/lintian/overrides/relay", mode: 0o644, owner: "root", group: "root", src: "deb/lintian-overrides"},
	}
}

// checkInstalled checks every packaged path's type, mode, owner and content, and that
// dpkg lists no file beyond them.
func checkInstalled(t *testing.T, version string) {
	t.Helper()
	files := packagedFiles(t, version)
	for _, f := range files {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if fi.IsDir() != f.dir || (!f.dir && !fi.Mode().IsRegular()) {
			t.Errorf("%s: mode %v, want a %s", f.path, fi.Mode(), map[bool]string{true: "directory", false: "regular file"}[f.dir])
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %#o, want %#o", f.path, fi.Mode().Perm(), f.mode)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if owner, group := userName(st.Uid), groupName(st.Gid); owner != f.owner || group != f.group {
			t.Errorf("%s: owned by %s:%s, want %s:%s", f.path, owner, group, f.owner, f.group)
		}
		if f.src == "" && f.check == nil {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if f.src != "" && string(b) != readFile(t, f.src) {
			t.Errorf("%s differs from deploy/%s", f.path, f.src)
		}
		if f.check != nil {
			f.check(t, b)
		}
	}
	checkVersionOutput(t, "/usr/bin/relay", version)

	// Nothing else: every file dpkg says the package owns is one of the above.
	out, err := exec.Command("dpkg-query", "--listfiles", "relay").Output()
	if err != nil {
		t.Fatalf("dpkg-query --listfiles relay: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() && !slices.ContainsFunc(files, func(f packaged) bool { return f.path == p }) {
			continue // /usr, /usr/share/doc and the like
		}
		if !slices.ContainsFunc(files, func(f packaged) bool { return f.path == p }) {
			t.Errorf("the package installs %s, which the test does not know", p)
		}
	}
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		return g.Name
	}
	return strconv.Itoa(int(gid))
}

// run runs a command, failing the test with its output if it fails.
func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// snapshot lists the paths under the directories a package of this kind touches, to
// compare the host before the install and after the purge.
func snapshot(t *testing.T) map[string]bool {
	t.Helper()
	paths := map[string]bool{}
	for _, root := range []string{"/etc", "/usr/bin", "/usr/sbin", "/usr/lib/systemd", "/usr/lib/sysusers.d",
		"/usr/share/relay", "/usr/share/doc/relay", "/usr/share/man/man1", "/usr/share/lintian/overrides",
		"/var/lib/relay", "/var/lib/systemd", "/var/lib/dpkg/info"} {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil {
				paths[path] = true
			}
			return nil
		})
	}
	return paths
}

// TestDebPackage installs the package of deploy/release.sh with dpkg on this machine
// (it must not have relay installed), as root, and checks: every file with its mode,
// owner and content; the relay system user; systemd-analyze verify of the installed
// unit; relay version; that the installed service command refuses to start without a
// secret, in one line; that an upgrade to a newer build keeps the operator's edited
// /etc/relay/relay.toml and the unit enabled; that dpkg -r disables the unit and
// leaves only the config, and dpkg -P leaves nothing. The host is cleaned up (purge,
// and the relay user if the test created it) even when the test fails.
func TestDebPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the package install test needs root (dpkg -i)", "sudo go test -run TestDebPackage ./deploy")
	}
	need(t, "dpkg", "dpkg")
	analyze := need(t, "systemd-analyze", "systemd")
	need(t, "systemd-sysusers", "systemd")
	need(t, "systemctl", "systemd")
	need(t, "deb-systemd-helper", "init-system-helpers")
	need(t, "setpriv", "util-linux")
	arch := strings.TrimSpace(runCmd(t, "dpkg", "--print-architecture"))
	if arch != runtime.GOARCH || (arch != "amd64" && arch != "arm64") {
		t.Skipf("dpkg architecture %s, Go %s: the package is built for amd64 and arm64", arch, runtime.GOARCH)
	}
	// Two runs of this test on one machine (two checkouts, CI beside a developer) take
	// turns instead of failing on each other's install.
	hostLock(t, "/run/lock/relay-deb-test.lock", 10*time.Minute)
	// Never touch an install that is not ours: the cleanup purges the package.
	if out, err := exec.Command("dpkg-query", "--show", "--showformat=${Status}", "relay").Output(); err == nil && !strings.Contains(string(out), "not-installed") {
		t.Fatalf("the relay package is on this machine already (%s): the test installs and purges it; remove it first (dpkg -P relay)", out)
	}
	for _, p := range []string{"/etc/relay", "/var/lib/relay", "/usr/bin/relay"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists: the test installs the package and purges it, which would remove it", p)
		}
	}
	deb1 := filepath.Join(release(t, debV1), "relay_"+debVersion(debV1)+"_"+arch+".deb")
	deb2 := filepath.Join(release(t, debV2), "relay_"+debVersion(debV2)+"_"+arch+".deb")

	before := snapshot(t)
	_, userErr := user.Lookup("relay")
	const wantsLink = "/etc/systemd/system/multi-user.target.wants/relay.service"
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "--force-remove-reinstreq", "relay").CombinedOutput(); err != nil {
			t.Errorf("cleanup: dpkg --purge relay: %v\n%s", err, out)
		}
		if target, err := os.Readlink(wantsLink); err == nil && strings.HasSuffix(target, "/relay.service") {
			_ = os.Remove(wantsLink)
		}
		// Neither existed before the test (checked above): what a failed purge left.
		_ = os.RemoveAll("/etc/relay")
		_ = os.RemoveAll("/var/lib/relay")
		if userErr != nil { // the package made the user; Debian leaves it, the test does not
			if out, err := exec.Command("userdel", "relay").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel relay: %v\n%s", err, out)
			}
		}
	})

	// Install.
	out := runCmd(t, "dpkg", "-i", deb1)
	if !strings.Contains(out, "relay is installed but not started") || !strings.Contains(out, "systemctl enable --now relay") {
		t.Errorf("dpkg -i says nothing of what to do next:\n%s", out)
	}
	checkInstalled(t, debV1)
	if got := readFile(t, "/etc/relay/relay.toml"); got != readFile(t, "../config.example.toml") {
		t.Errorf("/etc/relay/relay.toml is not config.example.toml")
	}

	// The user: a system user without a login shell, in its own group.
	u, err := user.Lookup("relay")
	if err != nil {
		t.Fatalf("no relay user after the install: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid <= 0 || uid >= 1000 {
		t.Errorf("relay uid %s is not a system uid", u.Uid)
	}
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "relay" {
		t.Errorf("relay's primary group %s: %v %v", u.Gid, g, err)
	}
	if pw := runCmd(t, "getent", "passwd", "relay"); !strings.HasSuffix(strings.TrimSpace(pw), "nologin") {
		t.Errorf("relay has a login shell: %s", pw)
	}

	// The installed unit, as systemd sees it (its ExecStart is the installed binary).
	if out, ok := verifyFile(analyze, "/usr/lib/systemd/system/relay.service"); !ok {
		t.Errorf("systemd-analyze verify of the installed unit:\n%s", out)
	}

	// The service's command, as the unit runs it, refuses the shipped config (no
	// secret) with one line and exit status 78, which the unit does not restart.
	execStart := strings.Fields(unitSettings(t, readFile(t, "/usr/lib/systemd/system/relay.service"))["Service"]["ExecStart"][0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=relay", "--regid=relay", "--init-groups", "--"}, execStart...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &exit) || exit.ExitCode() != 78 {
		t.Errorf("%s as user relay without a secret: %v (want exit status 78)\n%s", strings.Join(execStart, " "), err, &stderr)
	}
	const refusal = "relay: no [auth] secrets in /etc/relay/relay.toml: put secrets = [\"<output of: openssl rand -hex 32>\"] under [auth], then start relay again\n"
	if stderr.String() != refusal {
		t.Errorf("refusal on stderr (the journal):\n%q\nwant the one line\n%q", &stderr, refusal)
	}

	// The operator sets a secret and enables relay, as the install told them to.
	edited := strings.Replace(readFile(t, "/etc/relay/relay.toml"), "\nsecrets = []\n",
		"\nsecrets = [\"deb-test-secret-0123456789abcdef0123456789abcdef\"]\n", 1)
	if !strings.Contains(edited, "deb-test-secret") {
		t.Fatal("config.example.toml has no `secrets = []` line to edit")
	}
	if err := os.WriteFile("/etc/relay/relay.toml", []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "systemctl", "enable", "relay.service")
	// Files the package does not ship: a certificate the ACME hook installed, and state.
	extra := []string{"/etc/relay/tls/fullchain.pem", "/var/lib/relay/state"}
	for _, p := range extra {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not the package's\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(wantsLink); err != nil {
		t.Fatalf("systemctl enable relay made no %s: %v", wantsLink, err)
	}

	// Upgrade to the newer build: the new binary, the edited config kept as it is.
	out = runCmd(t, "dpkg", "-i", deb2)
	if strings.Contains(out, "relay is installed but not started") {
		t.Errorf("the upgrade repeats the first-install message:\n%s", out)
	}
	checkInstalled(t, debV2)
	if got := readFile(t, "/etc/relay/relay.toml"); got != edited {
		t.Errorf("the upgrade changed the edited /etc/relay/relay.toml:\n%s", got)
	}
	for _, leftover := range []string{".dpkg-dist", ".dpkg-new", ".dpkg-old"} {
		if _, err := os.Lstat("/etc/relay/relay.toml" + leftover); err == nil {
			t.Errorf("the upgrade left /etc/relay/relay.toml%s", leftover)
		}
	}
	if _, err := os.Lstat(wantsLink); err != nil {
		t.Errorf("the upgrade disabled relay: %v", err)
	}

	// Remove: everything but the config goes, the unit is disabled.
	runCmd(t, "dpkg", "-r", "relay")
	for _, f := range packagedFiles(t, debV2) {
		_, err := os.Lstat(f.path)
		keep := strings.HasPrefix(f.path, "/etc/relay") || f.path == "/var/lib/relay" // config and state
		if keep != (err == nil) {
			t.Errorf("after dpkg -r, %s: %v (want it %s)", f.path, err, map[bool]string{true: "kept", false: "gone"}[keep])
		}
	}
	if got := readFile(t, "/etc/relay/relay.toml"); got != edited {
		t.Errorf("dpkg -r changed /etc/relay/relay.toml")
	}
	for _, p := range extra {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("dpkg -r removed %s (config and state stay until purge): %v", p, err)
		}
	}
	if _, err := os.Lstat(wantsLink); err == nil {
		t.Errorf("dpkg -r left relay enabled (%s)", wantsLink)
	}
	if st := runCmd(t, "dpkg-query", "--show", "--showformat=${Status}", "relay"); st != "deinstall ok config-files" {
		t.Errorf("after dpkg -r the package is %q, want config-files only", st)
	}

	// Purge: nothing is left, not even the files the package did not ship (the relay
	// user stays, as Debian packages leave system users).
	runCmd(t, "dpkg", "-P", "relay")
	if out, err := exec.Command("dpkg-query", "--show", "--showformat=${Status}", "relay").CombinedOutput(); err == nil && !strings.Contains(string(out), "not-installed") {
		t.Errorf("after dpkg -P: %s", out)
	}
	after := snapshot(t)
	userDB := regexp.MustCompile(`^/etc/(passwd|group|shadow|gshadow)-$|^/etc/\.pwd\.lock$`)
	for p := range after {
		if !before[p] && !userDB.MatchString(p) {
			t.Errorf("dpkg -P left %s behind", p)
		}
	}
	for p := range before {
		if !after[p] {
			t.Errorf("installing and purging relay removed %s, which was there before", p)
		}
	}
}

// TestGuideStartsWithPackage: the deploy guide's first command installs the package.
func TestGuideStartsWithPackage(t *testing.T) {
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(readFile(t, "README.md"))
	if m == nil || strings.TrimSpace(m[1]) != "apt install ./relay_<version>_amd64.deb" {
		t.Errorf("deploy/README.md's first command block is %q, want `apt install ./relay_<version>_amd64.deb`", m)
	}
}

// TestManPageCoversHelp: every command and flag of `relay help` and `relay check -h`
// is in the man page the package installs, so that the two do not drift apart.
func TestManPageCoversHelp(t *testing.T) {
	man := strings.ReplaceAll(readFile(t, "deb/relay.1"), `\-`, "-")
	bin := relayBinary(t)
	help, err := exec.Command(bin, "help").Output()
	if err != nil {
		t.Fatal(err)
	}
	checkHelp, _ := exec.Command(bin, "check", "-h").CombinedOutput() // exit status 0, usage on stderr
	words := regexp.MustCompile(`(?m)(?:^|\s)(-[a-z][a-z-]*|relay [a-z]+)\b`).FindAllStringSubmatch(string(help)+string(checkHelp), -1)
	if len(words) < 10 {
		t.Fatalf("found only %d commands and flags in relay help:\n%s", len(words), help)
	}
	for _, w := range words {
		if !strings.Contains(man, w[1]) {
			t.Errorf("deploy/deb/relay.1 does not mention %q of relay help", w[1])
		}
	}
}

// hostLock holds an exclusive flock on path until the test ends, waiting up to wait.
func hostLock(t *testing.T, path string, wait time.Duration) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("another package test holds %s: %v", path, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}
