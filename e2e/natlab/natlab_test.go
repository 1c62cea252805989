//go:build linux

package natlab

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/skipnote"
	"github.com/relayproject/relay/internal/testcert"
)

// peerResult is what cmd/peer and browser.mjs print after RESULT.
type peerResult struct {
	Role               string   `json:"role"`
	FirstPair          string   `json:"first_pair"`
	Connected          bool     `json:"connected"`
	Message            string   `json:"message"`
	Millis             float64  `json:"millis"`
	LocalType          string   `json:"local_type"`
	LocalAddr          string   `json:"local_addr"`
	LocalRelayProtocol string   `json:"local_relay_protocol"`
	RemoteType         string   `json:"remote_type"`
	RemoteAddr         string   `json:"remote_addr"`
	ICEState           string   `json:"ice_state"`
	Srflx              []string `json:"srflx"`
	Relayed            []string `json:"relayed"`
	ICEServers         []string `json:"ice_servers"`
	Error              string   `json:"error"`
}

func (r peerResult) local() string {
	if r.LocalRelayProtocol != "" {
		return r.LocalType + "/" + r.LocalRelayProtocol
	}
	return r.LocalType
}

// peerKind is what runs as a peer: cmd/peer (pion/webrtc) or Chromium with PeerJS.
type peerKind string

const (
	pionPeer     peerKind = "pion"
	chromiumPeer peerKind = "chromium"
)

// scenario is one call: a peer in caller's home calls a peer in callee's home.
type scenario struct {
	name                   string
	caller, callee         string // home names
	callerKind, calleeKind peerKind
	policy                 string // ICE transport policy of both peers: all or relay
	servers                string // which of {path}ice's servers both peers use: all, stun, tcp, tls
	timeout                time.Duration
	want                   string // expectation, as printed in the matrix
	check                  func(call, answer peerResult) error
	probeNAT               bool // afterwards, read the caller's router: mappings and STUN's answer
}

// row is one line of the matrix.
type row struct {
	s            scenario
	call, answer peerResult
	err          error  // the expectation did not hold
	skipped      string // why the scenario did not run
}

func direct(t string) bool { return t == "host" || t == "srflx" || t == "prflx" }

func wantConnected(call, answer peerResult) error {
	if !call.Connected || call.Message != "Hello World!" {
		return fmt.Errorf("caller got no %q back (message %q, ICE %s, error %q)", "Hello World!", call.Message, call.ICEState, call.Error)
	}
	if !answer.Connected {
		return fmt.Errorf("answerer never got the click (ICE %s, error %q)", answer.ICEState, answer.Error)
	}
	return nil
}

func wantDirect(call, answer peerResult) error {
	if err := wantConnected(call, answer); err != nil {
		return err
	}
	if !direct(call.LocalType) || !direct(call.RemoteType) || !direct(answer.LocalType) || !direct(answer.RemoteType) {
		return fmt.Errorf("pairs %s/%s (answerer %s/%s): want a direct (host/srflx/prflx) pair", call.LocalType, call.RemoteType,
			answer.LocalType, answer.RemoteType)
	}
	return nil
}

func wantThroughRelay(call, answer peerResult) error {
	if err := wantConnected(call, answer); err != nil {
		return err
	}
	if call.LocalType != "relay" && call.RemoteType != "relay" {
		return fmt.Errorf("pair %s/%s: want the relay on at least one side", call.LocalType, call.RemoteType)
	}
	return nil
}

func wantRelayBoth(call, answer peerResult) error {
	if err := wantConnected(call, answer); err != nil {
		return err
	}
	if call.LocalType != "relay" || call.RemoteType != "relay" || answer.LocalType != "relay" || answer.RemoteType != "relay" {
		return fmt.Errorf("pairs %s/%s (answerer %s/%s): want relay/relay", call.LocalType, call.RemoteType, answer.LocalType, answer.RemoteType)
	}
	return nil
}

func wantCallerRelayOver(protos ...string) func(call, answer peerResult) error {
	return func(call, answer peerResult) error {
		if err := wantConnected(call, answer); err != nil {
			return err
		}
		if call.LocalType != "relay" {
			return fmt.Errorf("caller's local candidate is %s: want relay", call.LocalType)
		}
		for _, p := range protos {
			if call.LocalRelayProtocol == p {
				return nil
			}
		}
		return fmt.Errorf("caller reaches TURN over %q: want %s", call.LocalRelayProtocol, strings.Join(protos, " or "))
	}
}

func wantNotConnected(call, answer peerResult) error {
	if call.Connected {
		return fmt.Errorf("connected through %s/%s: want no connection without TURN", call.LocalType, call.RemoteType)
	}
	return nil
}

// labHomes are the home networks, in the order they are numbered.
func labHomes() []*home {
	return []*home{
		{name: "cone1", kind: cone},
		{name: "cone2", kind: cone},
		{name: "sym1", kind: symmetric},
		{name: "sym2", kind: symmetric},
		{name: "corp", kind: udpBlocked},
	}
}

func scenarios() []scenario {
	const ok, fail = 15 * time.Second, 6 * time.Second
	pion := func(name, caller, callee, policy, servers string, timeout time.Duration, want string, check func(call, answer peerResult) error) scenario {
		return scenario{name: name, caller: caller, callee: callee, callerKind: pionPeer, calleeKind: pionPeer,
			policy: policy, servers: servers, timeout: timeout, want: want, check: check}
	}
	browser := func(s scenario, callerKind, calleeKind peerKind) scenario {
		s.callerKind, s.calleeKind = callerKind, calleeKind
		return s
	}
	probe := func(s scenario) scenario { s.probeNAT = true; return s }
	return []scenario{
		probe(pion("cone ↔ cone", "cone1", "cone2", "all", "all", ok, "direct", wantDirect)),
		pion("cone ↔ cone", "cone1", "cone2", "relay", "all", ok, "relay/relay", wantRelayBoth),
		pion("symmetric ↔ symmetric, no TURN", "sym1", "sym2", "all", "stun", fail, "fails", wantNotConnected),
		probe(pion("symmetric ↔ symmetric", "sym1", "sym2", "all", "all", ok, "through relay", wantThroughRelay)),
		pion("symmetric ↔ symmetric", "sym1", "sym2", "relay", "all", ok, "relay/relay", wantRelayBoth),
		pion("cone ↔ symmetric, no TURN", "cone1", "sym2", "all", "stun", fail, "fails", wantNotConnected),
		pion("cone ↔ symmetric", "cone1", "sym2", "all", "all", ok, "connects (report)", wantConnected),
		pion("cone ↔ symmetric", "cone1", "sym2", "relay", "all", ok, "relay/relay", wantRelayBoth),
		pion("udp-blocked ↔ cone", "corp", "cone2", "all", "all", ok, "relay over tcp/tls", wantCallerRelayOver("tcp", "tls")),
		pion("udp-blocked ↔ cone, TURN/TCP only", "corp", "cone2", "all", "tcp", ok, "relay over tcp", wantCallerRelayOver("tcp")),
		pion("udp-blocked ↔ cone, TURN/TLS only", "corp", "cone2", "all", "tls", ok, "relay over tls", wantCallerRelayOver("tls")),
		pion("udp-blocked ↔ cone", "corp", "cone2", "relay", "all", ok, "relay/relay", wantRelayBoth),
		// The same NATs with Chromium and the real PeerJS client on both ends, and mixed.
		browser(pion("Chromium: cone ↔ cone", "cone1", "cone2", "all", "all", ok, "direct", wantDirect), chromiumPeer, chromiumPeer),
		browser(pion("Chromium: symmetric ↔ symmetric", "sym1", "sym2", "all", "all", ok, "through relay", wantThroughRelay), chromiumPeer, chromiumPeer),
		browser(pion("Chromium: udp-blocked ↔ cone", "corp", "cone2", "all", "all", ok, "relay over tcp/tls", wantCallerRelayOver("tcp", "tls")), chromiumPeer, chromiumPeer),
		browser(pion("Chromium (cone) ↔ pion (symmetric)", "cone1", "sym2", "relay", "all", ok, "relay/relay", wantRelayBoth), chromiumPeer, pionPeer),
	}
}

// TestNATLab builds the lab, runs every scenario, prints the matrix (and writes it as
// markdown to $NATLAB_MATRIX if set), then runs `relay check` from inside the NATs.
func TestNATLab(t *testing.T) {
	requireLab(t)
	began := time.Now()
	lockLab(t)
	relayBin, peerBin := buildBinaries(t)
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.WriteFor(t, dir, net.ParseIP(relayIP)) // the turns: URL names the address
	l := newLab(t, labHomes())
	relay := startRelay(t, relayBin, dir, certFile, keyFile)
	t.Logf("lab built and relay started in %v", time.Since(began).Round(time.Millisecond))
	signalURL := fmt.Sprintf("http://%s:%d/", relayIP, signalPort)
	env := peerEnv{peerBin: peerBin, certFile: certFile, signalURL: signalURL, profileDir: t.TempDir()}
	env.nodeModules, env.noBrowser = browserAvailable()
	if env.noBrowser != "" {
		if os.Getenv("CI") == "true" {
			t.Errorf("the Chromium scenarios cannot run in CI: %s", env.noBrowser)
		}
		t.Logf("Chromium scenarios skipped: %s", env.noBrowser)
	}

	var rows []row
	var natRows []natRow
	for i, s := range scenarios() {
		name := fmt.Sprintf("%02d %s policy=%s servers=%s", i+1, s.name, s.policy, s.servers)
		t.Run(name, func(t *testing.T) {
			r := row{s: s}
			if (s.callerKind == chromiumPeer || s.calleeKind == chromiumPeer) && env.noBrowser != "" {
				r.skipped = env.noBrowser
				rows = append(rows, r)
				what, enable, _ := strings.Cut(env.noBrowser, ": ")
				skipnote.Skip(t, "the Chromium scenarios: "+what, enable)
			}
			r.call, r.answer, r.err = l.call(t, env, i, s)
			if r.err == nil {
				r.err = s.check(r.call, r.answer)
			}
			rows = append(rows, r)
			t.Logf("caller %+v", r.call)
			t.Logf("answerer %+v", r.answer)
			if r.err != nil {
				t.Errorf("%s: %v", s.name, r.err)
			}
			if s.probeNAT {
				// Read the caller's router while its mappings are fresh: the NAT must behave
				// as its kind says, and behind a cone NAT what STUN told the peer must be the
				// mapping the router made.
				h := l.homes[s.caller]
				eim, detail := l.endpointIndependent(h)
				t.Logf("%s (%s NAT): %s", h.name, h.kind, detail)
				n := natRow{h: h, after: i + 1, eim: eim, detail: detail, stun: "—"}
				if want := h.kind != symmetric; eim != want {
					t.Errorf("%s (%s NAT): endpoint-independent mapping = %v, want %v: %s", h.name, h.kind, eim, want, detail)
				}
				if h.kind == cone {
					if len(r.call.Srflx) == 0 {
						t.Errorf("the peer behind %s got no server-reflexive address from STUN", h.name)
					} else if m, err := l.checkMapping(h, r.call.Srflx); err != nil {
						t.Error(err)
						n.stun = "**NO**: " + err.Error()
					} else {
						n.stun = "yes: " + m
					}
				}
				natRows = append(natRows, n)
			}
		})
	}

	var checks []checkRow
	t.Run("relay check", func(t *testing.T) {
		checks = l.relayChecks(t, relayBin, certFile, signalURL)
	})

	matrix := formatMatrix(rows, natRows, checks, time.Since(began))
	t.Logf("NAT lab matrix:\n%s", matrix)
	if path := os.Getenv("NATLAB_MATRIX"); path != "" {
		if err := os.WriteFile(path, []byte(matrix), 0o644); err != nil {
			t.Errorf("writing NATLAB_MATRIX: %v", err)
		}
	}
	relay.stop(syscall.SIGTERM, 5*time.Second)
	if relay.err != nil {
		t.Errorf("relay exited with %v on SIGTERM\n%s", relay.err, tail(relay.output(), 20))
	}
	if path := os.Getenv("NATLAB_RELAY_LOG"); path != "" {
		if err := os.WriteFile(path, []byte(relay.output()), 0o644); err != nil {
			t.Errorf("writing NATLAB_RELAY_LOG: %v", err)
		}
	}
	var problems []string
	for _, line := range strings.Split(relay.output(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			problems = append(problems, line)
		}
	}
	t.Logf("relay logged %d warnings and errors%s", len(problems), strings.Join(append([]string{""}, problems...), "\n"))
	if t.Failed() {
		t.Logf("relay log (tail):\n%s", tail(relay.output(), 40))
	}
}

// peerEnv is what starting a peer takes.
type peerEnv struct {
	peerBin, certFile, signalURL string
	profileDir                   string // browser profiles, removed with the test's temporary directory
	nodeModules                  string // e2e/browser/node_modules (playwright-core, peerjs)
	noBrowser                    string // why the Chromium scenarios cannot run, or ""
}

// browserAvailable finds Chromium, node and e2e/browser's npm dependencies.
func browserAvailable() (nodeModules, missing string) {
	for _, c := range []struct{ bin, pkg string }{{"chromium", "chromium"}, {"node", "nodejs"}} {
		if _, err := exec.LookPath(c.bin); err != nil {
			return "", fmt.Sprintf("%s not found: apt-get install %s", c.bin, c.pkg)
		}
	}
	nodeModules, err := filepath.Abs("../browser/node_modules")
	if err != nil {
		return "", err.Error()
	}
	for _, f := range []string{"playwright-core/index.mjs", "peerjs/dist/peerjs.min.js"} {
		if _, err := os.Stat(filepath.Join(nodeModules, f)); err != nil {
			return "", "e2e/browser/node_modules/" + f + " missing: (cd e2e/browser && npm ci)"
		}
	}
	return nodeModules, ""
}

// argv is the command line and environment of a peer of kind k.
func (e peerEnv) argv(k peerKind, s scenario, id, call string, other peerKind) (argv, env []string) {
	if k == chromiumPeer {
		script, _ := filepath.Abs("browser.mjs")
		env = []string{"SIGNAL_URL=" + e.signalURL, "PEER_ID=" + id, "CALL=" + call, "POLICY=" + s.policy,
			"TIMEOUT_MS=" + strconv.FormatInt(s.timeout.Milliseconds(), 10), "NODE_MODULES=" + e.nodeModules, "PROFILE_DIR=" + e.profileDir}
		if other == pionPeer {
			env = append(env, "SERIALIZATION=raw") // cmd/peer speaks strings, not PeerJS's binarypack
		}
		return []string{"node", script}, env
	}
	argv = []string{e.peerBin, "-signal", e.signalURL, "-id", id, "-policy", s.policy, "-servers", s.servers,
		"-timeout", s.timeout.String()}
	if call != "" {
		argv = append(argv, "-call", call)
	}
	// cmd/peer trusts relay's TLS certificate as a system root (Go reads SSL_CERT_FILE).
	return argv, []string{"SSL_CERT_FILE=" + e.certFile}
}

// call runs one scenario: the answerer first (READY once signaling said OPEN), then
// the caller; both print RESULT.
func (l *lab) call(t *testing.T, e peerEnv, i int, s scenario) (call, answer peerResult, err error) {
	caller, callee := l.homes[s.caller], l.homes[s.callee]
	ids := [2]string{fmt.Sprintf("s%02d-%s-call", i+1, s.caller), fmt.Sprintf("s%02d-%s-answer", i+1, s.callee)}
	argv, env := e.argv(s.calleeKind, s, ids[1], "", s.callerKind)
	ans := start(t, string(s.calleeKind)+" answerer in "+callee.ns, callee.ns, env, argv...)
	defer ans.stop(syscall.SIGTERM, 3*time.Second)
	if _, err := ans.waitLine("READY", 20*time.Second); err != nil {
		return call, answer, fmt.Errorf("%v\n%s", err, ans.output())
	}
	argv, env = e.argv(s.callerKind, s, ids[0], ids[1], s.calleeKind)
	cal := start(t, string(s.callerKind)+" caller in "+caller.ns, caller.ns, env, argv...)
	defer cal.stop(syscall.SIGTERM, 3*time.Second)
	res, err := cal.waitLine("RESULT", s.timeout+10*time.Second)
	if err != nil {
		return call, answer, fmt.Errorf("%v\n%s", err, cal.output())
	}
	if err := json.Unmarshal([]byte(res), &call); err != nil {
		return call, answer, fmt.Errorf("caller printed %q: %v", res, err)
	}
	// The answerer finishes when the caller leaves.
	if res, err = ans.waitLine("RESULT", 5*time.Second); err == nil {
		err = json.Unmarshal([]byte(res), &answer)
	}
	if err != nil {
		return call, answer, fmt.Errorf("answerer: %v\n%s", err, ans.output())
	}
	if testing.Verbose() {
		t.Logf("caller output:\n%s", tail(cal.output(), 20))
		t.Logf("answerer output:\n%s", tail(ans.output(), 20))
	}
	return call, answer, nil
}

// checkMapping: every server-reflexive address STUN reported to a peer behind h is a
// mapping h's router made: the router's public address, and a port its connection
// table shows for that peer's traffic to relay.
func (l *lab) checkMapping(h *home, srflx []string) (string, error) {
	entries := l.conntrack(h)
	var seen []string
	for _, addr := range srflx {
		found := ""
		for _, e := range entries {
			if e.proto == "udp" && e.src == h.hostIP && e.dst == relayIP && e.dport == turnPort && e.mapping() == addr {
				found = fmt.Sprintf("%s:%d→%s:%d is %s", e.src, e.sport, e.dst, e.dport, e.mapping())
			}
		}
		if !strings.HasPrefix(addr, h.wanIP+":") || found == "" {
			return "", fmt.Errorf("%s: STUN reported %s, which is not a mapping of the router (public address %s; its UDP mappings to relay: %v)",
				h.name, addr, h.wanIP, udpMappingsTo(entries, h.hostIP, relayIP))
		}
		seen = append(seen, found)
	}
	return strings.Join(seen, "; "), nil
}

func udpMappingsTo(entries []conntrackEntry, src, dst string) []string {
	var out []string
	for _, e := range entries {
		if e.proto == "udp" && e.src == src && e.dst == dst {
			out = append(out, fmt.Sprintf("%s:%d->%s", e.src, e.sport, e.mapping()))
		}
	}
	return out
}

// endpointIndependent looks at h's connection table after the scenarios: for each
// local UDP socket of the home that talked to several destinations, did the router use
// one public port for all of them?
func (l *lab) endpointIndependent(h *home) (bool, string) {
	bySocket := map[string]map[string]string{} // "ip:port" -> destination -> public mapping
	for _, e := range l.conntrack(h) {
		if e.proto != "udp" || e.src != h.hostIP {
			continue
		}
		sock := fmt.Sprintf("%s:%d", e.src, e.sport)
		if bySocket[sock] == nil {
			bySocket[sock] = map[string]string{}
		}
		bySocket[sock][fmt.Sprintf("%s:%d", e.dst, e.dport)] = e.mapping()
	}
	sockets, same, differ := 0, 0, 0
	example := ""
	for sock, dsts := range bySocket {
		if len(dsts) < 2 {
			continue
		}
		sockets++
		ports := map[string]bool{}
		for _, m := range dsts {
			ports[m] = true
		}
		if len(ports) == 1 {
			same++
		} else {
			differ++
		}
		if example == "" {
			parts := []string{}
			for d, m := range dsts {
				if len(parts) < 3 {
					parts = append(parts, d+" via "+m)
				}
			}
			sort.Strings(parts)
			example = sock + " → " + strings.Join(parts, ", ")
			if len(dsts) > 3 {
				example += fmt.Sprintf(" (and %d more)", len(dsts)-3)
			}
		}
	}
	detail := fmt.Sprintf("%d sockets talked to several destinations: %d kept one public port, %d got several; e.g. %s", sockets, same, differ, example)
	return sockets > 0 && differ == 0, detail
}

// natRow is what a router's connection table showed after a scenario.
type natRow struct {
	h      *home
	after  int // the scenario it was read after
	eim    bool
	detail string
	stun   string // whether STUN's answer was the router's mapping
}

// checkRow is one `relay check` run from inside a home.
type checkRow struct {
	home, url, reflexive, want string
	pass                       bool
}

var reflexiveRE = regexp.MustCompile(`reflexive address (\S+)`)

// relayChecks runs `relay check` from inside the homes, the way an operator would from
// behind a NAT: it must pass and print the NAT's public address as the reflexive one.
func (l *lab) relayChecks(t *testing.T, relayBin, certFile, signalURL string) []checkRow {
	cases := []struct{ home, url string }{
		{"cone1", fmt.Sprintf("turn:%s:%d?transport=udp", relayIP, turnPort)},
		{"sym1", fmt.Sprintf("turn:%s:%d?transport=udp", relayIP, turnPort)},
		{"corp", fmt.Sprintf("turn:%s:%d?transport=tcp", relayIP, turnPort)},
		{"corp", fmt.Sprintf("turns:%s:%d?transport=tcp", relayIP, turnsPort)},
		{"cone2", signalURL + "ice"},
	}
	var rows []checkRow
	for _, c := range cases {
		h := l.homes[c.home]
		args := []string{"ip", "netns", "exec", h.ns, relayBin, "check", c.url, "-timeout", "5s", "-ca", certFile}
		if !strings.HasPrefix(c.url, "http") {
			args = append(args, "-secret", labSecret)
		}
		out, err := execOutput(args...)
		r := checkRow{home: c.home, url: c.url, want: h.wanIP, pass: err == nil && strings.Contains(out, "\nPASS\n")}
		ms := reflexiveRE.FindAllStringSubmatch(out, -1)
		var refl []string
		for _, m := range ms {
			refl = append(refl, m[1])
		}
		r.reflexive = strings.Join(refl, " ")
		t.Logf("relay check %s from %s (%s NAT, public %s):\n%s", c.url, h.ns, h.kind, h.wanIP, out)
		if !r.pass {
			t.Errorf("relay check %s from %s: %v\n%s", c.url, c.home, err, out)
		}
		if len(refl) == 0 {
			t.Errorf("relay check %s from %s printed no reflexive address", c.url, c.home)
		}
		for _, a := range refl {
			if !strings.HasPrefix(a, h.wanIP+":") {
				t.Errorf("relay check from %s: reflexive address %s, want the NAT's public address %s", c.home, a, h.wanIP)
			}
		}
		// Behind the cone NAT the port too is the router's mapping.
		if h.kind == cone && strings.HasPrefix(c.url, "turn:") && len(refl) > 0 {
			if _, err := l.checkMapping(h, refl[:1]); err != nil {
				t.Error(err)
			}
		}
		rows = append(rows, r)
	}
	return rows
}

func execOutput(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// formatMatrix renders the results as a markdown table.
func formatMatrix(rows []row, nat []natRow, checks []checkRow, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| # | scenario (caller ↔ answerer) | policy | ICE servers | expected | connected | caller pair: local / remote | answerer pair: local / remote | first message | caller's STUN address | as expected |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		conn, pair, apair, ms := "no", "—", "—", "—"
		if r.call.Connected {
			conn = "yes"
			pair = r.call.local() + " / " + r.call.RemoteType
			if r.call.FirstPair != "" && r.call.FirstPair != r.call.LocalType+" / "+r.call.RemoteType {
				pair += " (first " + r.call.FirstPair + ")"
			}
			ms = fmt.Sprintf("%.0f ms", r.call.Millis)
		} else if r.call.ICEState != "" {
			conn = "no (ICE " + r.call.ICEState + ")"
		}
		srflx := strings.Join(r.call.Srflx, " ")
		if srflx == "" {
			srflx = "—"
		}
		okText := "yes"
		if r.skipped != "" {
			conn, okText = "skipped", "skipped: "+r.skipped
		}
		if r.err != nil {
			okText = "**NO**: " + strings.ReplaceAll(r.err.Error(), "|", "/")
		}
		if r.answer.LocalType != "" {
			apair = r.answer.local() + " / " + r.answer.RemoteType
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", i+1, r.s.name, r.s.policy, r.s.servers, r.s.want,
			conn, pair, apair, ms, srflx, okText)
	}
	if len(nat) > 0 {
		fmt.Fprintf(&b, "\n| router, after scenario | NAT | public address | endpoint-independent mapping | connection table | STUN address = router's mapping |\n|---|---|---|---|---|---|\n")
		for _, n := range nat {
			fmt.Fprintf(&b, "| %s, after %d | %s | %s | %v | %s | %s |\n", n.h.router, n.after, n.h.kind, n.h.wanIP, n.eim, n.detail, n.stun)
		}
	}
	if len(checks) > 0 {
		fmt.Fprintf(&b, "\n| `relay check` from | URL | reflexive address | NAT's public address | result |\n|---|---|---|---|---|\n")
		for _, c := range checks {
			res := "PASS"
			if !c.pass {
				res = "**FAIL**"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s |\n", c.home, c.url, c.reflexive, c.want, res)
		}
	}
	fmt.Fprintf(&b, "\nlab run took %v\n", took.Round(100*time.Millisecond))
	return b.String()
}
