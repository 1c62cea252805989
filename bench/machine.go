//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine is what the report says about where it ran: numbers from two machines are
// not comparable, ratios measured side by side in one run are.
type machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	LoadAvg     string `json:"loadavg_at_start"`
	GoVersion   string `json:"go_version"`
	Relay       string `json:"relay_version"`
	RelaySource string `json:"relay_source,omitempty"`
	Coturn      string `json:"coturn_version,omitempty"`
	CoturnDeb   string `json:"coturn_debian_version,omitempty"`
	Node        string `json:"node_version,omitempty"`
	PeerServer  string `json:"peer_server_version,omitempty"`
	NoFileLimit uint64 `json:"open_files_limit"`
	Date        string `json:"date"`
}

func describeMachine(o *options) machine {
	m := machine{
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Date:      time.Now().UTC().Format(time.RFC3339),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	m.Relay = firstLine(exec.Command(o.relayBin, "version"))
	m.RelaySource = o.relayLabel
	if o.wantTURN() && o.has("coturn") {
		m.Coturn = firstLine(exec.Command(o.coturnBin, "--version"))
	}
	if o.wantTURN() && o.has(kindCoturnDebian) {
		m.CoturnDeb = firstLine(exec.Command(o.coturnDebianBin, "--version"))
	}
	if o.wantSignal() && o.has("peer") {
		m.Node = firstLine(exec.Command(o.nodeBin, "--version"))
		if b, err := os.ReadFile(o.peerPackageJSON()); err == nil {
			var p struct{ Version string }
			if json.Unmarshal(b, &p) == nil {
				m.PeerServer = "peer " + p.Version
			}
		}
	}
	m.NoFileLimit = noFileLimit()
	return m
}

func firstLine(c *exec.Cmd) string {
	out, _ := c.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
