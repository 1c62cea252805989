//go:build linux

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestOffloadCrashDetaches: a relay killed outright (SIGKILL: no Close, no cleanup)
// leaves nothing of its kernel data path behind: its tcx links and the program die with
// its file descriptors, as nothing is pinned.
func TestOffloadCrashDetaches(t *testing.T) {
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the kernel data path needs root", "sudo go test ./e2e")
	}
	p := startRelay(t, baseConfig(""))
	var id uint32
	for _, line := range strings.Split(p.log(), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			Program uint32 `json:"program"`
			Reason  string `json:"reason"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "turn offload on":
			id = rec.Program
		case "turn offload off":
			skipnote.Skip(t, "the kernel data path cannot run here: "+rec.Reason, "Linux 6.6 or later with BTF, as root")
		}
	}
	if id == 0 || !onLo(t, id) {
		t.Fatalf("no program of relay's (id %d) attached to lo\n%s", id, p.log())
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	waitFor(t, "the killed relay's program to leave lo", func() bool { return !onLo(t, id) })
	waitFor(t, "the kernel to free the program", func() bool {
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err == nil {
			prog.Close()
			return false
		}
		return true
	})
}

// onLo reports whether program id is attached to lo's tcx ingress.
func onLo(t *testing.T, id uint32) bool {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Programs {
		if uint32(p.ID) == id {
			return true
		}
	}
	return false
}
