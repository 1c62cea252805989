package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/relayproject/relay/auth"
)

// TestPrometheusScrapesRelay runs a real Prometheus (Debian's) with the shipped
// deploy/prometheus/prometheus.yml and relay-alerts.yml, pointed at a running relay that
// has relayed traffic: the relay job is up, the relayed bytes arrive in Prometheus, the
// alert rules load healthy and none fires, and every query of the Grafana dashboard
// evaluates and returns data, except the fleet panels', which return no series at all on
// a single node (Grafana then shows their "single node" text, not a stray 0). It also
// checks that every metric the dashboard and the alerts use is one the running relay
// exports (the relay_cluster_* ones: TestPrometheusScrapesFleet).
func TestPrometheusScrapesRelay(t *testing.T) {
	promBin := need(t, "prometheus", "prometheus")
	p := startRelay(t, baseConfig(""))
	promRelayTraffic(t, p, "prom-test", 5)
	promSignalTraffic(t, p)

	prom := startPrometheus(t, promBin, p.addr("http"))

	// The relayed bytes reach Prometheus.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := prom.query(t, "sum(relay_turn_relayed_bytes_total)")
		if len(res) == 1 && res[0].value() > 0 {
			t.Logf("Prometheus sees relay_turn_relayed_bytes_total = %v", res[0].value())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay_turn_relayed_bytes_total never reached Prometheus: %+v\n%s", res, prom.log())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if res := prom.query(t, `up{job="relay"}`); len(res) != 1 || res[0].value() != 1 || res[0].Metric["instance"] != p.addr("http") {
		t.Fatalf(`up{job="relay"} = %+v, want 1 for instance %s`, res, p.addr("http"))
	}

	// The shipped alert rules load, evaluate without errors, and a healthy relay fires none.
	queries := map[string]string{}
	for name, q := range checkAlertRules(t, prom, "a healthy relay") {
		queries[name] = q
	}

	// Every dashboard query is valid PromQL against real data and returns series, with
	// Grafana's variables filled in as Grafana would.
	dash := promDashboardQueries(t)
	// Grafana regex-escapes a variable used with =~, then escapes the backslashes again
	// for the PromQL string literal: 127\\.0\\.0\\.1:port.
	instanceRegex := strings.ReplaceAll(regexp.QuoteMeta(p.addr("http")), `\`, `\\`)
	fill := strings.NewReplacer("$__rate_interval", "1m", "$instance", instanceRegex, "$job", "relay")
	// "All" instances, as the dashboard opens: only the job keeps other targets out.
	fillAll := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".+", "$job", "relay")
	waitFor(t, "two scrapes for rate()", func() bool { return len(prom.query(t, "rate(relay_turn_relayed_bytes_total[1m])")) == 2 })
	waitFor(t, "Prometheus to scrape itself twice", func() bool {
		return len(prom.query(t, `rate(process_cpu_seconds_total{job="prometheus"}[1m])`)) == 1
	})
	for where, q := range dash {
		queries[where] = q
		if strings.HasPrefix(q, "label_values(") {
			continue // a Grafana function, not PromQL
		}
		if isFleetQuery(q) {
			if res := prom.query(t, fillAll.Replace(q)); len(res) != 0 {
				t.Errorf("dashboard %s shows series on a single node: %s\n%+v", where, q, res)
			}
			continue
		}
		if res := prom.query(t, fill.Replace(q)); len(res) == 0 {
			t.Errorf("dashboard %s returns no data: %s", where, q)
		}
		for _, res := range prom.query(t, fillAll.Replace(q)) {
			if job, ok := res.Metric["job"]; ok && job != "relay" {
				t.Errorf("dashboard %s, all instances, shows a series of job %q: %v", where, job, res.Metric)
			}
		}
	}
	var values struct{ Data []string }
	prom.api(t, "/api/v1/label/instance/values", url.Values{"match[]": {"relay_build_info"}}, &values)
	if len(values.Data) != 1 || values.Data[0] != p.addr("http") {
		t.Errorf("the instance variable's query, label_values(relay_build_info, instance), gives %v", values.Data)
	}

	// Every metric named by the dashboard and the alerts is exported by this relay.
	exported := map[string]bool{"up": true} // up comes from Prometheus itself
	for series := range p.metrics() {
		name, _, _ := strings.Cut(series, "{")
		exported[name] = true
	}
	var missing []string
	for where, q := range queries {
		for _, name := range promMetricNames(q) {
			if !exported[name] && !strings.HasPrefix(name, "relay_cluster_") {
				missing = append(missing, where+": "+name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics used but not exported by relay:\n%s", strings.Join(missing, "\n"))
	}
	t.Logf("%d dashboard and alert queries checked against Prometheus and relay's /metrics", len(queries))
}

// shippedAlerts is how many alerting rules deploy/prometheus/relay-alerts.yml defines.
func shippedAlerts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("../deploy/prometheus/relay-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	n := len(regexp.MustCompile(`(?m)^\s*- alert:`).FindAll(b, -1))
	if n < 9 {
		t.Fatalf("relay-alerts.yml: %d alerts, want at least 9", n)
	}
	return n
}

// isFleetQuery: the query reads a metric only a fleet node ([cluster] redis) exports.
func isFleetQuery(q string) bool {
	for _, n := range promMetricNames(q) {
		if strings.HasPrefix(n, "relay_cluster_") {
			return true
		}
	}
	return false
}

// TestPrometheusScrapesFleet: a real Prometheus with the shipped config scraping two
// relay nodes that share a redis-server. Every fleet panel of the dashboard returns data
// for the two nodes selected as Grafana's multi-value Node variable sends them, with
// the values the panels mean (two nodes up, none draining, the backend up on each),
// every relay_cluster_* metric the dashboard and the alerts use is one a fleet node
// exports, the alert rules evaluate cleanly and none fires for a healthy fleet.
func TestPrometheusScrapesFleet(t *testing.T) {
	promBin := need(t, "prometheus", "prometheus")
	url := startRedisServer(t)
	n1 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n1\"\n"))
	n2 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n2\"\n"))
	prom := startPrometheus(t, promBin, n1.addr("http"), n2.addr("http"))

	waitFor(t, "both nodes to count two nodes up in Prometheus", func() bool {
		res := prom.query(t, `relay_cluster_nodes{job="relay", state="up"} == 2`)
		return len(res) == 2
	})
	waitFor(t, "two scrapes of both nodes for rate()", func() bool {
		return len(prom.query(t, `rate(relay_cluster_messages_sent_total{job="relay"}[1m])`)) == 2
	})

	// Grafana's multi-value format for =~: (a|b), each value regex-escaped, then the
	// backslashes escaped again for the PromQL string literal.
	esc := func(s string) string { return strings.ReplaceAll(regexp.QuoteMeta(s), `\`, `\\`) }
	nodes := "(" + esc(n1.addr("http")) + "|" + esc(n2.addr("http")) + ")"
	fill := strings.NewReplacer("$__rate_interval", "1m", "$instance", nodes, "$job", "relay")
	fleet := 0
	for where, q := range promDashboardQueries(t) {
		if !isFleetQuery(q) {
			continue
		}
		fleet++
		res := prom.query(t, fill.Replace(q))
		if len(res) == 0 {
			t.Errorf("dashboard %s returns no data for a fleet: %s", where, q)
		}
		for _, r := range res {
			if job, ok := r.Metric["job"]; ok && job != "relay" {
				t.Errorf("dashboard %s shows a series of job %q: %v", where, job, r.Metric)
			}
		}
		switch where {
		case "panel Fleet nodes up/A":
			if len(res) != 1 || res[0].value() != 2 {
				t.Errorf("%s = %+v, want 2", where, res)
			}
		case "panel Fleet nodes draining/A":
			if len(res) != 1 || res[0].value() != 0 {
				t.Errorf("%s = %+v, want 0", where, res)
			}
		case "panel Redis backend up/A":
			if len(res) != 2 || res[0].value() != 1 || res[1].value() != 1 {
				t.Errorf("%s = %+v, want 1 for each node", where, res)
			}
		}
	}
	if fleet < 6 {
		t.Errorf("%d fleet queries in the dashboard, want the fleet row's", fleet)
	}

	// The alert rules evaluate against a fleet without errors, and none fires.
	queries := promDashboardQueries(t)
	for name, q := range checkAlertRules(t, prom, "a healthy fleet") {
		queries[name] = q
	}

	exported := map[string]bool{}
	for series := range n1.metrics() {
		name, _, _ := strings.Cut(series, "{")
		exported[name] = true
	}
	for where, q := range queries {
		for _, name := range promMetricNames(q) {
			if strings.HasPrefix(name, "relay_cluster_") && !exported[name] {
				t.Errorf("%s uses %s, which a fleet node does not export", where, name)
			}
		}
	}
}

// promRelayTraffic allocates over UDP with pion's TURN client and echoes n datagrams
// through the relay to a local UDP echo peer (the TestCredsThenRelay pattern).
func promRelayTraffic(t *testing.T, p *relayProc, userID string, n int) {
	t.Helper()
	echo := testpeer.Echo(t)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	user := fmt.Sprintf("%d:%s", time.Now().Add(time.Hour).Unix(), userID)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: p.addr("udp"), TURNServerAddr: p.addr("udp"), Conn: conn,
		Username: user, Password: auth.RESTPassword(e2eSecret, user), Realm: "e2e.relay", LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relayConn.Close()
	msg := []byte("metrics through the relay")
	buf := make([]byte, 100)
	for i := 0; i < n; i++ {
		if _, err := relayConn.WriteTo(msg, echo); err != nil {
			t.Fatal(err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if m, _, err := relayConn.ReadFrom(buf); err != nil || !bytes.Equal(buf[:m], msg) {
			t.Fatalf("echo %d: %q %v", i, buf[:m], err)
		}
	}
	waitFor(t, "the relayed counters", func() bool {
		return p.metrics()[`relay_turn_relayed_packets_total{direction="peer_to_client"}`] >= float64(n)
	})
}

// promSignalTraffic fetches ICE credentials and sends one PeerJS HEARTBEAT, so that the
// signaling and ICE series carry data.
func promSignalTraffic(t *testing.T, p *relayProc) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr("signal") + "/ice")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.addr("signal")+"/peerjs?key=peerjs&id=prom-peer&token=tok", nil)
	if err != nil {
		t.Fatalf("signaling websocket: %v", err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"HEARTBEAT"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the signaling counters", func() bool {
		m := p.metrics()
		return m[`relay_signal_messages_total{type="HEARTBEAT"}`] >= 1 && m["relay_ice_credentials_issued_total"] >= 1
	})
}

type promProc struct {
	cmd    *exec.Cmd
	base   string
	out    *lockedWriter
	exited chan error
}

// startPrometheus runs prometheus with the shipped scrape config and alert rules,
// rewritten to scrape the targets (relay nodes) every second, plus a job that scrapes
// Prometheus itself, and waits until it is ready.
func startPrometheus(t *testing.T, bin string, targets ...string) *promProc {
	t.Helper()
	dir := t.TempDir()
	shipped, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(shipped)
	for old, new := range map[string]string{
		`"127.0.0.1:9641"`:         `"` + strings.Join(targets, `", "`) + `"`,
		"scrape_interval: 15s":     "scrape_interval: 1s",
		"evaluation_interval: 15s": "evaluation_interval: 1s",
	} {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("deploy/prometheus/prometheus.yml: expected one %q to rewrite", old)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	rules, err := os.ReadFile("../deploy/prometheus/relay-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay-alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	_ = l.Close()
	// Prometheus also scrapes itself, as Debian's packaged config does: the dashboard
	// must keep that job's up, process_* and go_* series out of relay's panels.
	cfg += "\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"" + listen + "\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	pr := &promProc{base: "http://" + listen, out: &lockedWriter{}, exited: make(chan error, 1)}
	pr.cmd = exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
		"--log.level=warn",
	)
	pr.cmd.Dir = dir
	pr.cmd.Stdout, pr.cmd.Stderr = pr.out, pr.out
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { pr.exited <- pr.cmd.Wait() }()
	t.Cleanup(func() {
		_ = pr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.exited:
		case <-time.After(10 * time.Second):
			_ = pr.cmd.Process.Kill()
			<-pr.exited
			t.Errorf("prometheus did not stop within 10s of SIGTERM")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-pr.exited:
			t.Fatalf("prometheus exited: %v\n%s", err, pr.log())
		default:
		}
		if resp, err := http.Get(pr.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return pr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready in 30s\n%s", pr.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (pr *promProc) log() string { return pr.out.String() }

// api GETs a Prometheus HTTP API path and decodes its data field into out.
func (pr *promProc) api(t *testing.T, path string, params url.Values, out any) {
	t.Helper()
	u := pr.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	if body.Status != "success" {
		t.Fatalf("GET %s: %s %s", u, body.Status, body.Error)
	}
	// /api/v1/label/... returns a bare list as data; wrap it for uniform decoding.
	data := body.Data
	if len(data) > 0 && data[0] == '[' {
		data = append(append([]byte(`{"data":`), data...), '}')
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		return
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	var v float64
	str, _ := s.Value[1].(string)
	_, _ = fmt.Sscan(str, &v)
	return v
}

// query runs an instant PromQL query; an invalid expression fails the test.
func (pr *promProc) query(t *testing.T, q string) []promSample {
	t.Helper()
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	pr.api(t, "/api/v1/query", url.Values{"query": {q}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("query %q: result type %q", q, data.ResultType)
	}
	return data.Result
}

// promDashboardQueries collects every "expr" (panel targets) and template variable query
// of deploy/grafana/relay.json, keyed by panel title and refId.
func promDashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/relay.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			}
		}
		Templating struct {
			List []struct {
				Name, Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out["panel "+p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out["variable $"+v.Name] = v.Definition
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d queries in the dashboard", len(out))
	}
	return out
}

var (
	promQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promName   = regexp.MustCompile(`\b(relay_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+|up)\b`)
)

// promMetricNames picks metric names out of PromQL loosely: relay_*, process_*, go_* and
// up identifiers outside string literals (so label values are not taken for metrics).
func promMetricNames(q string) []string {
	return promName.FindAllString(promQuoted.ReplaceAllString(q, `""`), -1)
}

// lockedWriter collects a process's output while the test may read it.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// checkAlertRules waits until Prometheus has evaluated every shipped alert rule, fails
// the test for a rule that errors or an alert that fires against what (a healthy relay,
// a healthy fleet), and returns each rule's query as "alert NAME".
func checkAlertRules(t *testing.T, prom *promProc, what string) map[string]string {
	t.Helper()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name, Query, Health, Type string
				LastError                 string `json:"lastError"`
			}
		}
	}
	waitFor(t, "the alert rules to be evaluated", func() bool {
		prom.api(t, "/api/v1/rules", nil, &rules)
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Type == "alerting" && r.Health == "ok" {
					n++
				}
			}
		}
		return n == shippedAlerts(t)
	})
	queries := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.LastError != "" {
				t.Errorf("alert %s: %s", r.Name, r.LastError)
			}
			queries["alert "+r.Name] = r.Query
		}
	}
	var alerts struct {
		Alerts []struct{ Labels map[string]string }
	}
	prom.api(t, "/api/v1/alerts", nil, &alerts)
	for _, a := range alerts.Alerts {
		t.Errorf("alert %s is active against %s: %v", a.Labels["alertname"], what, a.Labels)
	}
	return queries
}
