package deploy

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// guideBlock returns the lines of the first ```sh block under the README.md heading that
// starts with heading.
func guideBlock(t *testing.T, heading string) []string {
	t.Helper()
	readme := readFile(t, "README.md")
	_, section, ok := strings.Cut(readme, "\n"+heading)
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("README.md %q has no ```sh block", heading)
	}
	return strings.Split(strings.TrimSpace(m[1]), "\n")
}

// copyTree copies the repository's files (not .git, node_modules or build output) to dst,
// so that a build step can run in a fresh checkout without touching this one.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "artifacts":
				return filepath.SkipDir
			}
			if rel == "bin" || rel == "dist" { // build output (dist/: deploy/release.sh)
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestREADMEBuildStep runs step 1 of deploy/README.md as written, in a copy of the
// repository standing in for the fresh clone: the build, the install (into a scratch
// directory instead of /usr/local/bin) and `relay version` from the installed binary. A
// build that writes somewhere the next line does not look (go build -o relay in the
// repository root lands inside the relay/ package folder) fails here.
func TestREADMEBuildStep(t *testing.T) {
	if testing.Short() {
		t.Skip("builds relay from a copy of the tree; skipped with -short")
	}
	lines := guideBlock(t, "## 1. Binary")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "git clone ") || !strings.HasSuffix(lines[0], "&& cd relay") {
		t.Fatalf("step 1 should start with `git clone ... && cd relay`, then build and install:\n%s", strings.Join(lines, "\n"))
	}
	clone := filepath.Join(t.TempDir(), "relay")
	copyTree(t, "..", clone)
	bin := t.TempDir() // stands in for /usr/local/bin
	for _, line := range lines[1:] {
		line = strings.ReplaceAll(line, "/usr/local/bin/", bin+"/")
		cmd := exec.Command("sh", "-ec", line)
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("deploy/README.md step 1, %q in a fresh clone: %v\n%s", line, err, out)
		}
		t.Logf("%s\n%s", line, out)
		if strings.HasPrefix(line, "relay version") && !strings.HasPrefix(string(out), "relay ") {
			t.Errorf("relay version printed %q", out)
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "relay")); err != nil {
		t.Errorf("step 1 installed no relay binary: %v", err)
	}
}

// TestRepositoryStandsAlone: no file of the repository points at documents outside it
// (the notes its authors worked from, one folder up), and the README's layout table lists
// every top-level folder, none of them as "not yet".
func TestRepositoryStandsAlone(t *testing.T) {
	outside := regexp.MustCompile(`\.\./shared\b|\bshared/[A-Za-z0-9_-]+\.md\b`)
	checked := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "node_modules" || n == "artifacts" || n == "testdata" || (strings.HasPrefix(n, ".") && n != ".." && n != ".ci") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".toml", ".yml", ".yaml", ".json", ".js", ".mjs", ".html", ".css", ".sh", ".service", ".conf", "":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d refers to a file outside the repository: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("only %d files checked: is the walk rooted at the repository?", checked)
	}

	readme := readFile(t, "../README.md")
	_, layout, ok := strings.Cut(readme, "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no ## Layout section")
	}
	layout, _, _ = strings.Cut(layout, "\n## ")
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(e.Name()) + "(/[^`]*)?` \\|(.*)$").FindStringSubmatch(layout)
		if row == nil {
			t.Errorf("README.md's layout table has no row for %s/", e.Name())
			continue
		}
		if strings.Contains(row[2], "not yet") {
			t.Errorf("README.md's layout table says %s/ is not there yet: %s", e.Name(), row[0])
		}
	}
}
