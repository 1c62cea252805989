// Command gensum records what the committed eBPF object was built from (go generate
// runs it after bpf2go): the SHA-256 of the C source and of the object, and the clang
// that compiled it, in datapath.sum. TestObjectMatchesSource checks the record.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gensum:", err)
		os.Exit(1)
	}
}

func run() error {
	src, err := fileSum("bpf/datapath.c")
	if err != nil {
		return err
	}
	obj, err := fileSum("datapath_bpfel.o")
	if err != nil {
		return err
	}
	out, err := exec.Command("clang", "--version").Output()
	if err != nil {
		return fmt.Errorf("clang --version: %w", err)
	}
	clang, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	body := fmt.Sprintf("source %s bpf/datapath.c\nobject %s datapath_bpfel.o\nclang %s\n", src, obj, clang)
	return os.WriteFile("datapath.sum", []byte(body), 0o644)
}

func fileSum(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}
