//go:build linux

// Command bench measures relay against reference servers, side by side on one machine,
// over loopback only: coturn for TURN (CPU per relayed datagram, highest sustained
// packet rate, allocation setup rate, memory per idle allocation) and the PeerJS
// reference server (npm "peer") for signaling (CPU per routed message, delivery
// latency, memory per idle peer). It starts and stops every server itself, alternates
// them over several rounds and reports medians and relay/reference ratios against the
// targets. See bench/README.md.
//
// It is a Go module of its own (gonum/plot stays out of the server's go.mod), run from
// its directory or with go -C; it finds the repository root itself (to build ./cmd/relay
// and find the PeerJS server); paths given on the command line are relative to where it
// runs. bench/run.sh builds it and runs it from the repository root.
//
//	go -C bench run .                 # the default suite (about 7 minutes)
//	go -C bench run . -quick          # one round, shorter windows (about 1.5 minutes)
//	go -C bench run . -mode turn -json out.json -plot ../docs/bench-throughput.png
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type options struct {
	mode    string
	quick   bool
	rounds  int
	servers []string

	relayBin, coturnBin, nodeBin, peerJS string
	coturnDebianBin                      string
	redisBin                             string
	// clusterRedis: the relays being started are fleet nodes on this Redis ("host:port").
	clusterRedis            string
	relayLabel              string
	relayPorts, coturnPorts [2]uint16
	secret                  string

	// TURN traffic
	allocs                 int
	payload                int
	fixedRate              float64
	rates                  []float64
	bisect                 int
	warmup, window         time.Duration
	stepWarmup, stepWindow time.Duration
	drain                  time.Duration
	pace                   time.Duration
	genThreads             int
	// STUN Binding
	stunSockets, stunOutstanding int
	// TURN setup and memory
	idleAllocs, setupConc int
	settle, memSettle     time.Duration
	// signaling
	signalPairs, signalBytes, idlePeers, connectConc, signalLimit int
	signalRate                                                    float64
	// wss: the signaling servers being started serve TLS (the wss rounds), with this
	// self-signed certificate, which clientTLS trusts.
	wss               bool
	certFile, keyFile string
	clientTLS         *tls.Config

	quietWait  time.Duration
	quietPct   float64
	busyStarts int // phases that started on a busy machine anyway

	jsonPath, plotPath string
	children           children
	tmpDirs            []string        // removed at exit
	relayUnknown       map[string]bool // relayOptional keys this relay binary refuses
	started            time.Time
}

func (o *options) wantTURN() bool   { return o.want("turn") }
func (o *options) wantSignal() bool { return o.want("signal") }
func (o *options) wantWSS() bool    { return o.want("wss") }

// wantFleet: -mode fleet, only when named ("all" does not include it: it needs
// redis-server, which the single-node suite does not).
func (o *options) wantFleet() bool {
	for _, x := range strings.Split(o.mode, ",") {
		if x == "fleet" {
			return true
		}
	}
	return false
}

// want reports whether -mode (a comma-separated list) asks for m.
func (o *options) want(m string) bool {
	for _, x := range strings.Split(o.mode, ",") {
		if x == "all" || x == m {
			return true
		}
	}
	return false
}

func (o *options) has(kind string) bool {
	for _, s := range o.servers {
		if s == kind {
			return true
		}
	}
	return false
}

func (o *options) peerPackageJSON() string {
	return filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(o.peerJS))), "package.json")
}

func (o *options) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(o.started).Seconds(), fmt.Sprintf(format, args...))
}

func noFileLimit() uint64 {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return r.Cur
}

func parseRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return [2]uint16{}, fmt.Errorf("%q: expected MIN-MAX, e.g. 10000-21299", s)
	}
	return [2]uint16{uint16(a), uint16(b)}, nil
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q: expected a comma-separated list of positive rates", s)
		}
		if len(out) > 0 && v <= out[len(out)-1] {
			return nil, fmt.Errorf("%q: rates must rise", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func main() {
	o := &options{started: time.Now(), relayUnknown: map[string]bool{}}
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.StringVar(&o.mode, "mode", "all", `what to measure: "turn" (relay vs coturn), "signal" (relay vs the PeerJS reference server), "wss" (the signal phases over TLS, both servers with one certificate), "fleet" (two relay nodes sharing one redis-server, against a single relay; not part of "all"), a comma-separated list of those, or "all"`)
	fs.BoolVar(&o.quick, "quick", false, "one round with shorter windows and fewer rate steps (about 1.5 minutes), for repeated use; explicit flags still win")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every server once, alternating which goes first, and the report gives medians")
	servers := fs.String("servers", "relay,coturn,peer", "servers to run (relay, coturn, peer; for the TURN data path table also relay-userspace, relay with [turn] offload = \"off\", and coturn-debian, -coturn-debian-bin); ratios need relay and the reference")
	fs.StringVar(&o.relayBin, "relay-bin", "", "relay binary to test; empty: go build ./cmd/relay (of the repository the harness is run in) into a temporary directory")
	fs.StringVar(&o.relayLabel, "relay-label", "", "what the relay binary was built from, for the report; empty: `git describe --always --dirty` here when the harness builds it")
	fs.StringVar(&o.coturnBin, "coturn-bin", "turnserver", "coturn's turnserver (Debian package coturn, or one built from source)")
	fs.StringVar(&o.coturnDebianBin, "coturn-debian-bin", "/usr/bin/turnserver", "the second coturn of -servers coturn-debian (Debian's package), beside -coturn-bin")
	fs.StringVar(&o.redisBin, "redis-server", "redis-server", "redis-server, for -mode fleet (Debian package redis-server)")
	fs.StringVar(&o.nodeBin, "node", "node", "node, to run the PeerJS reference server")
	fs.StringVar(&o.peerJS, "peerjs", "e2e/browser/node_modules/peer/dist/bin/peerjs.js", "the PeerJS reference server's CLI (npm peer 1.0.2; `npm ci` in e2e/browser installs it); a relative path not found here is looked up from the repository root")
	relayPorts := fs.String("relay-ports", "10000-21299", "relay's relay port range; below the kernel's ephemeral range so generator sockets never take one, and apart from coturn's")
	coturnPorts := fs.String("coturn-ports", "21300-32599", "coturn's relay port range (--min-port/--max-port)")

	fs.IntVar(&o.allocs, "allocs", 200, "allocations carrying traffic, each on its own client socket")
	fs.IntVar(&o.payload, "payload", 160, "ChannelData payload bytes (an audio frame is 100-200)")
	fs.Float64Var(&o.fixedRate, "fixed-rate", 20000, "offered round trips/s for the CPU-per-datagram measurement; both servers must sustain it")
	rates := fs.String("rates", "10000,20000,40000,60000,80000,100000,120000,150000,200000", "offered round trips/s, rising, for the highest sustained rate; stepping stops at the first step with >= 0.1% loss")
	fs.IntVar(&o.bisect, "bisect", 2, "extra steps bisecting between the last passing and the first failing rate")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "traffic before the fixed-rate and signaling windows start")
	fs.DurationVar(&o.window, "window", 5*time.Second, "fixed-rate and signaling measuring window")
	fs.DurationVar(&o.stepWarmup, "step-warmup", 500*time.Millisecond, "traffic before each rate step's window")
	fs.DurationVar(&o.stepWindow, "step-window", 3*time.Second, "measuring window of each rate step")
	fs.DurationVar(&o.pace, "pace", 50*time.Microsecond, "shortest sleep of the sending loop: datagrams due within it go out together. Smaller is smoother traffic and more generator CPU")
	fs.IntVar(&o.genThreads, "gen-threads", 1, "TURN traffic generator threads (event loops on locked OS threads), each with its share of the allocations and rate; more than one when the server costs less than the generator (the kernel data path relays inside the generator's own system calls)")
	fs.DurationVar(&o.drain, "drain", 300*time.Millisecond, "listening after a window for datagrams still in flight")
	fs.IntVar(&o.stunSockets, "stun-sockets", 32, "client sockets sending Binding requests in the STUN phase (0: no STUN phase)")
	fs.IntVar(&o.stunOutstanding, "stun-outstanding", 32, "Binding requests each STUN-phase socket keeps in flight")
	fs.IntVar(&o.idleAllocs, "idle-allocs", 10000, "allocations held for the memory measurement (also the setup-rate sample)")
	fs.IntVar(&o.setupConc, "setup-concurrency", 200, "clients setting up allocations at once (each waits for its answers; too few and the rate measures round-trip latency, not the server)")
	fs.DurationVar(&o.settle, "settle", time.Second, "idle time after a server starts before its empty RSS is read")
	fs.DurationVar(&o.memSettle, "mem-settle", 2*time.Second, "idle time after the last allocation or peer before the loaded RSS is read")

	fs.IntVar(&o.signalPairs, "signal-pairs", 1000, "signaling peer pairs exchanging messages")
	fs.Float64Var(&o.signalRate, "signal-rate", 20000, "signaling messages/s in total")
	fs.IntVar(&o.signalBytes, "signal-bytes", 650, "size of each signaling message (a PeerJS OFFER)")
	fs.IntVar(&o.idlePeers, "idle-peers", 15000, "idle signaling peers for the memory measurement (each costs one socket here and one in the server)")
	fs.IntVar(&o.connectConc, "connect-concurrency", 64, "WebSocket handshakes at once")

	fs.DurationVar(&o.quietWait, "quiet-wait", 15*time.Second, "before each phase, wait up to this long for other processes to go quiet (0: never wait)")
	fs.Float64Var(&o.quietPct, "quiet-pct", 15, "what quiet means: other processes use at most this % of one core")
	fs.StringVar(&o.jsonPath, "json", "", "also write every measurement, the summary and the machine to this JSON file")
	fromJSON := fs.String("from-json", "", "run nothing: print the report (and -plot, -json) again from a JSON file an earlier run wrote")
	fs.StringVar(&o.plotPath, "plot", "", "draw delivered vs offered rate of both TURN servers to this PNG, e.g. docs/bench-throughput.png")
	_ = fs.Parse(os.Args[1:])

	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if o.quick {
		quick := map[string]string{
			"rounds": "1", "rates": "20000,40000,80000,120000,160000", "bisect": "1",
			"warmup": "500ms", "window": "3s", "step-warmup": "300ms", "step-window": "2s",
			"mem-settle": "1s",
		}
		for name, v := range quick {
			if !explicit[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
		os.Exit(2)
	}
	var err error
	if o.rates, err = parseRates(*rates); err != nil {
		fail("-rates %v", err)
	}
	if o.relayPorts, err = parseRange(*relayPorts); err != nil {
		fail("-relay-ports %v", err)
	}
	if o.coturnPorts, err = parseRange(*coturnPorts); err != nil {
		fail("-coturn-ports %v", err)
	}
	if o.relayPorts[0] <= o.coturnPorts[1] && o.coturnPorts[0] <= o.relayPorts[1] {
		fail("-relay-ports %s and -coturn-ports %s overlap", *relayPorts, *coturnPorts)
	}
	for _, r := range [][2]uint16{o.relayPorts, o.coturnPorts} {
		if r[0] <= 50999 && 50000 <= r[1] {
			fail("relay port range %d-%d includes 50000-50999, which other tests on this machine use", r[0], r[1])
		}
	}
	for _, m := range strings.Split(o.mode, ",") {
		switch m {
		case "all", "turn", "signal", "wss", "fleet":
		default:
			fail("-mode %q: expected turn, signal, wss, fleet (or a list of them, e.g. signal,wss) or all", o.mode)
		}
	}
	if o.rounds < 1 {
		fail("-rounds %d: expected at least 1", o.rounds)
	}
	for _, s := range strings.Split(*servers, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case kindRelay, kindCoturn, kindPeer, kindRelayUser, kindCoturnDebian:
			o.servers = append(o.servers, s)
		case "":
		default:
			fail("-servers: unknown server %q (relay, relay-userspace, coturn, coturn-debian, peer)", s)
		}
	}
	o.signalLimit = max(o.idlePeers, 2*o.signalPairs) + 1000
	if max(2*o.signalPairs, o.idlePeers)+200 > int(noFileLimit()) {
		fail("%d peers need as many sockets in this process, more than its open-file limit %d", max(2*o.signalPairs, o.idlePeers), noFileLimit())
	}
	if o.idleAllocs+200 > int(noFileLimit()) {
		fail("-idle-allocs %d needs as many sockets in this process, more than its open-file limit %d", o.idleAllocs, noFileLimit())
	}
	if *fromJSON != "" {
		if err := o.reportFrom(*fromJSON); err != nil {
			fail("-from-json: %v", err)
		}
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	o.secret = hex.EncodeToString(b)

	// Stop every server we started on Ctrl-C or SIGTERM, then exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: stopping servers\n", s)
		o.children.stopAll()
		o.removeTemp()
		os.Exit(130)
	}()

	if err := o.prepare(); err != nil {
		o.children.stopAll()
		o.removeTemp()
		fail("%v", err)
	}
	res := o.runSuite()
	o.children.stopAll()
	o.removeTemp()
	if err := o.report(res); err != nil {
		fail("%v", err)
	}
}

func (o *options) removeTemp() {
	for _, d := range o.tmpDirs {
		os.RemoveAll(d)
	}
}

// reportFrom loads a results file and reports it with the options it was run with.
func (o *options) reportFrom(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return err
	}
	opt := res.Options
	num := func(k string) float64 { v, _ := strconv.ParseFloat(opt[k], 64); return v }
	o.mode = opt["mode"]
	o.rounds = int(num("rounds"))
	o.fixedRate, o.signalRate = num("fixed_rate"), num("signal_rate")
	o.setupConc, o.idleAllocs, o.idlePeers = int(num("setup_conc")), int(num("idle_allocs")), int(num("idle_peers"))
	o.stunSockets, o.stunOutstanding = int(num("stun_sockets")), int(num("stun_window"))
	o.quietPct = num("quiet_pct")
	if o.rates, err = parseRates(opt["rates"]); err != nil {
		return err
	}
	return o.report(&res)
}

// prepare finds or builds every program the chosen mode needs, and says so plainly if
// one is missing.
func (o *options) prepare() error {
	root, rootErr := repoRoot()
	if o.relayBin == "" {
		if rootErr != nil {
			return fmt.Errorf("%w: run the harness inside the repository, or pass -relay-bin", rootErr)
		}
		dir, err := os.MkdirTemp("", "relay-bench-bin-")
		if err != nil {
			return err
		}
		o.tmpDirs = append(o.tmpDirs, dir)
		o.relayBin = filepath.Join(dir, "relay")
		o.logf("building relay: go build -o %s ./cmd/relay", o.relayBin)
		c := exec.Command("go", "build", "-o", o.relayBin, "./cmd/relay")
		c.Dir = root
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("building relay: %w", err)
		}
		if o.relayLabel == "" {
			git := exec.Command("git", "describe", "--always", "--dirty")
			git.Dir = root
			if out, err := git.Output(); err == nil {
				o.relayLabel = "working tree at " + strings.TrimSpace(string(out))
			}
		}
	}
	if _, err := os.Stat(o.relayBin); err != nil {
		return fmt.Errorf("-relay-bin: %w", err)
	}
	if o.wantTURN() && o.has(kindCoturn) {
		p, err := exec.LookPath(o.coturnBin)
		if err != nil {
			return fmt.Errorf("%s not found: apt-get install coturn (or -servers relay to run without it)", o.coturnBin)
		}
		o.coturnBin = p
	}
	if o.wantTURN() && o.has(kindCoturnDebian) {
		p, err := exec.LookPath(o.coturnDebianBin)
		if err != nil {
			return fmt.Errorf("%s not found: apt-get install coturn (or leave coturn-debian out of -servers)", o.coturnDebianBin)
		}
		o.coturnDebianBin = p
	}
	if o.wantWSS() {
		if err := o.writeCert(); err != nil {
			return fmt.Errorf("a certificate for the wss rounds: %w", err)
		}
	}
	if o.wantFleet() {
		p, err := exec.LookPath(o.redisBin)
		if err != nil {
			return fmt.Errorf("%s not found: apt-get install redis-server (-mode fleet needs it)", o.redisBin)
		}
		o.redisBin = p
	}
	if (o.wantSignal() || o.wantWSS()) && o.has(kindPeer) {
		p, err := exec.LookPath(o.nodeBin)
		if err != nil {
			return fmt.Errorf("%s not found: apt-get install nodejs (or -servers relay,coturn)", o.nodeBin)
		}
		o.nodeBin = p
		if _, err := os.Stat(o.peerJS); err != nil && !filepath.IsAbs(o.peerJS) && rootErr == nil {
			if _, err := os.Stat(filepath.Join(root, o.peerJS)); err == nil {
				o.peerJS = filepath.Join(root, o.peerJS)
			}
		}
		if _, err := os.Stat(o.peerJS); err != nil {
			return fmt.Errorf("PeerJS reference server %s: %v: run `npm ci` in e2e/browser, or pass -peerjs", o.peerJS, err)
		}
		if abs, err := filepath.Abs(o.peerJS); err == nil {
			o.peerJS = abs
		}
	}
	return nil
}

type results struct {
	Command string                   `json:"command"`
	Machine machine                  `json:"machine"`
	Options map[string]string        `json:"options"`
	TURN    map[string][]turnRound   `json:"turn,omitempty"`
	Signal  map[string][]signalRound `json:"signal,omitempty"`
	WSS     map[string][]signalRound `json:"wss,omitempty"` // the signal phases over TLS
	Fleet   []fleetRound             `json:"fleet,omitempty"`
	Summary []row                    `json:"summary"`
	// The TURN data path table (-servers with relay-userspace or coturn-debian).
	DataPath []dataPathRow `json:"data_path,omitempty"`
	Seconds  float64       `json:"seconds"`
	// Phases that started although other processes were busy (after -quiet-wait).
	BusyStarts int `json:"phases_started_on_busy_machine"`
}

func (o *options) runSuite() *results {
	res := &results{
		Command: commandLine(),
		Machine: describeMachine(o),
		Options: o.describe(),
		TURN:    map[string][]turnRound{},
		Signal:  map[string][]signalRound{},
		WSS:     map[string][]signalRound{},
	}
	o.logf("machine: %d CPUs, %s, kernel %s, load %s; %s", res.Machine.CPUs, res.Machine.CPUModel, res.Machine.Kernel, res.Machine.LoadAvg, res.Machine.Relay)
	var turnServers, signalServers []string
	for _, k := range turnKinds {
		if o.has(k) {
			turnServers = append(turnServers, k)
		}
	}
	for _, k := range []string{kindRelay, kindPeer} {
		if o.has(k) {
			signalServers = append(signalServers, k)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		if o.wantTURN() {
			for _, k := range alternate(turnServers, round) {
				o.logf("round %d/%d: TURN, %s", round, o.rounds, k)
				res.TURN[k] = append(res.TURN[k], o.turnRound(k, round))
			}
		}
		if o.wantSignal() {
			for _, k := range alternate(signalServers, round) {
				o.logf("round %d/%d: signaling, %s", round, o.rounds, k)
				res.Signal[k] = append(res.Signal[k], o.signalRound(k, round))
			}
		}
		if o.wantWSS() {
			o.wss = true
			for _, k := range alternate(signalServers, round) {
				o.logf("round %d/%d: signaling over TLS (wss), %s", round, o.rounds, k)
				res.WSS[k] = append(res.WSS[k], o.signalRound(k, round))
			}
			o.wss = false
		}
		if o.wantFleet() {
			o.logf("round %d/%d: fleet, 2 relay nodes + redis-server, and 1 relay alone", round, o.rounds)
			res.Fleet = append(res.Fleet, o.fleetRound(round))
		}
	}
	res.Seconds = time.Since(o.started).Seconds()
	res.BusyStarts = o.busyStarts
	return res
}

// alternate reverses the order every other round, so neither server always runs on a
// machine the other has just warmed (or heated).
func alternate(list []string, round int) []string {
	out := append([]string(nil), list...)
	if round%2 == 0 {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

func commandLine() string {
	if c := os.Getenv("BENCH_COMMAND"); c != "" {
		return c // set by bench/run.sh: the command a person typed
	}
	args := make([]string, len(os.Args)-1)
	for i, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		args[i] = a
	}
	return strings.TrimSpace("go -C bench run . " + strings.Join(args, " "))
}

// repoRoot is the relay repository the harness runs in: the nearest directory, here or
// above, that holds cmd/relay and go.mod (the harness runs from the root or from bench/).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if st, err := os.Stat(filepath.Join(dir, "cmd", "relay")); err == nil && st.IsDir() {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no relay repository (cmd/relay and go.mod) here or above")
		}
		dir = parent
	}
}

func (o *options) describe() map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	rs := make([]string, len(o.rates))
	for i, r := range o.rates {
		rs[i] = f(r)
	}
	return map[string]string{
		"mode": o.mode, "rounds": strconv.Itoa(o.rounds), "quick": strconv.FormatBool(o.quick),
		"servers":      strings.Join(o.servers, ","),
		"allocs":       strconv.Itoa(o.allocs),
		"payload":      strconv.Itoa(o.payload),
		"fixed_rate":   f(o.fixedRate),
		"rates":        strings.Join(rs, ","),
		"bisect":       strconv.Itoa(o.bisect),
		"pace":         o.pace.String(),
		"gen_threads":  strconv.Itoa(o.genThreads),
		"quiet_wait":   o.quietWait.String(),
		"quiet_pct":    f(o.quietPct),
		"window":       o.window.String(),
		"step_window":  o.stepWindow.String(),
		"idle_allocs":  strconv.Itoa(o.idleAllocs),
		"stun_sockets": strconv.Itoa(o.stunSockets),
		"stun_window":  strconv.Itoa(o.stunOutstanding),
		"setup_conc":   strconv.Itoa(o.setupConc),
		"signal_pairs": strconv.Itoa(o.signalPairs),
		"signal_rate":  f(o.signalRate),
		"signal_bytes": strconv.Itoa(o.signalBytes),
		"idle_peers":   strconv.Itoa(o.idlePeers),
		"relay_ports":  fmt.Sprintf("%d-%d", o.relayPorts[0], o.relayPorts[1]),
		"coturn_ports": fmt.Sprintf("%d-%d", o.coturnPorts[0], o.coturnPorts[1]),
	}
}
