package offload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestObjectMatchesSource: the committed object is the compiled bpf/datapath.c. Its
// record (datapath.sum, written by go generate) names the source and object hashes; an
// edit of the C without regenerating fails here without clang. With the clang the
// record names, the program is compiled again and must come out byte for byte.
func TestObjectMatchesSource(t *testing.T) {
	sum, err := os.ReadFile("datapath.sum")
	if err != nil {
		t.Fatal(err)
	}
	rec := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sum)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		rec[k] = v
	}
	for _, f := range []struct{ key, path string }{{"source", "bpf/datapath.c"}, {"object", "datapath_bpfel.o"}} {
		want, _, _ := strings.Cut(rec[f.key], " ")
		if got := fileHash(t, f.path); got != want {
			t.Errorf("%s: sha256 %s, but datapath.sum records %s: run go generate ./internal/offload (see gen.go)", f.path, got, want)
		}
	}

	if _, err := exec.LookPath("clang"); err != nil {
		skipnote.Skip(t, "clang not found (to compile the eBPF program again)", "apt-get install clang llvm libbpf-dev")
	}
	out, err := exec.Command("clang", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	clang, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	args := bpf2goArgs(t)
	dir := t.TempDir()
	cmd := exec.Command("go", append([]string{"run", "github.com/cilium/ebpf/cmd/bpf2go", "-output-dir", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=offload", "GOFILE=gen.go") // as go generate sets them
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, b)
	}
	if clang != rec["clang"] {
		// Another compiler makes other (valid) bytes: the hashes above still tie the
		// object to the source.
		t.Logf("%s is not the %s the object was built with: compiled, not compared", clang, rec["clang"])
		return
	}
	for _, f := range []string{"datapath_bpfel.o", "datapath_bpfel.go"} {
		fresh, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, committed) {
			t.Errorf("%s differs from a fresh compilation of bpf/datapath.c: run go generate ./internal/offload", f)
		}
	}
}

// bpf2goArgs are the arguments gen.go gives bpf2go (its go:generate line), so that the
// test compiles exactly as go generate does.
func bpf2goArgs(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "//go:generate go run github.com/cilium/ebpf/cmd/bpf2go "
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			var args []string
			for i, part := range strings.Split(rest, `"`) {
				if i%2 == 1 {
					args = append(args, part) // quoted: one argument
				} else {
					args = append(args, strings.Fields(part)...)
				}
			}
			return args
		}
	}
	t.Fatal("gen.go has no bpf2go line")
	return nil
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
