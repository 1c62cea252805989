package deploy

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/metrics"
)

const (
	promDir     = "prometheus"
	alertsFile  = "prometheus/relay-alerts.yml"
	alertsTests = "prometheus/relay-alerts_test.yml"
	dashboard   = "grafana/relay.json"
)

// The alerts the README documents, and deploy/prometheus/relay-alerts.yml must define.
var wantAlerts = []string{
	"RelayDown", "RelayAuthFailureSpike", "RelayDeniedPeerSpike", "RelayAllocationsNearLimit",
	"RelayPortsNearExhaustion", "RelayFDsNearLimit", "RelayReloadFailed",
	"RelayClusterBackendDown", "RelayClusterNodeLost",
}

func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(need(t, "promtool", "prometheus"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPromtoolCheckConfig: the shipped scrape config is valid and its rule_files entry
// resolves to the shipped alert rules.
func TestPromtoolCheckConfig(t *testing.T) {
	out, err := promtool(t, promDir, "check", "config", "prometheus.yml")
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1 rule files found") {
		t.Fatalf("prometheus.yml does not load relay-alerts.yml:\n%s", out)
	}
	cfg := readFile(t, filepath.Join(promDir, "prometheus.yml"))
	for _, want := range []string{"job_name: relay", `"127.0.0.1:9641"`, "- relay-alerts.yml"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("prometheus.yml lacks %q", want)
		}
	}
}

// TestPromtoolCheckRules: the alert rules parse, lint clean, and are the documented set.
func TestPromtoolCheckRules(t *testing.T) {
	out, err := promtool(t, promDir, "check", "rules", "relay-alerts.yml")
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(wantAlerts))) {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	rules := alertRules(t, readFile(t, alertsFile))
	for _, name := range wantAlerts {
		r, ok := rules[name]
		if !ok {
			t.Errorf("alert %s missing", name)
			continue
		}
		if r.severity != "warning" && r.severity != "critical" {
			t.Errorf("%s: severity %q", name, r.severity)
		}
	}
	if len(rules) != len(wantAlerts) {
		t.Errorf("%d alerts, want %d", len(rules), len(wantAlerts))
	}
}

// TestPromtoolTestRules: the alert unit tests pass.
func TestPromtoolTestRules(t *testing.T) {
	out, err := promtool(t, promDir, "test", "rules", "relay-alerts_test.yml")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestAlertTestsCoverEveryAlert: the unit tests have teeth for every alert. With the
// alert's expression replaced by one that never fires, the tests must fail (so some
// case expects it to fire); with one that always fires, they must fail too (so some
// case expects silence); and each alert has an explicit exp_alerts: [] case.
func TestAlertTestsCoverEveryAlert(t *testing.T) {
	need(t, "promtool", "prometheus")
	rulesText := readFile(t, alertsFile)
	testsText := readFile(t, alertsTests)
	for _, name := range wantAlerts {
		quiet := regexp.MustCompile(`(?m)alertname: ` + name + `\n\s+exp_alerts: \[\]`)
		if !quiet.MatchString(testsText) {
			t.Errorf("%s: no eval expecting it not to fire (exp_alerts: [])", name)
		}
		for _, mutant := range []string{"vector(0) > 1", "vector(1)"} {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "relay-alerts.yml"), replaceExpr(t, rulesText, name, mutant))
			writeFile(t, filepath.Join(dir, "relay-alerts_test.yml"), testsText)
			if out, err := promtool(t, dir, "test", "rules", "relay-alerts_test.yml"); err == nil {
				t.Errorf("%s with expr %q: the unit tests still pass:\n%s", name, mutant, out)
			}
		}
	}
}

type alertRule struct {
	expr, severity string
}

// alertRules reads the alert rules loosely (the file's own layout: "- alert:", then an
// "expr:" that is inline or a block scalar, then "severity:").
func alertRules(t *testing.T, text string) map[string]alertRule {
	t.Helper()
	rules := map[string]alertRule{}
	lines := strings.Split(text, "\n")
	name := ""
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "- alert:"):
			name = strings.TrimSpace(strings.TrimPrefix(trimmed, "- alert:"))
			rules[name] = alertRule{}
		case name != "" && strings.HasPrefix(trimmed, "expr:"):
			r := rules[name]
			v := strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
			if v == "|" || v == "|-" || v == ">" || v == ">-" {
				indent := len(line) - len(strings.TrimLeft(line, " "))
				var block []string
				for i+1 < len(lines) {
					next := lines[i+1]
					if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
						break
					}
					block = append(block, strings.TrimSpace(next))
					i++
				}
				v = strings.TrimSpace(strings.Join(block, "\n"))
			}
			r.expr = v
			rules[name] = r
		case name != "" && strings.HasPrefix(trimmed, "severity:"):
			r := rules[name]
			r.severity = strings.TrimSpace(strings.TrimPrefix(trimmed, "severity:"))
			rules[name] = r
		}
	}
	for n, r := range rules {
		if r.expr == "" {
			t.Fatalf("alert %s: no expr found", n)
		}
	}
	return rules
}

// replaceExpr returns the rules text with alert name's expression replaced by expr.
func replaceExpr(t *testing.T, text, name, expr string) string {
	t.Helper()
	lines := strings.Split(text, "\n")
	var out []string
	in, done := false, false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "- alert:") {
			in = strings.TrimSpace(strings.TrimPrefix(trimmed, "- alert:")) == name
		}
		if in && !done && strings.HasPrefix(trimmed, "expr:") {
			indent := len(line) - len(strings.TrimLeft(line, " "))
			out = append(out, strings.Repeat(" ", indent)+"expr: "+expr)
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent) {
				i++
			}
			done = true
			continue
		}
		out = append(out, line)
	}
	if !done {
		t.Fatalf("no expr for alert %s", name)
	}
	return strings.Join(out, "\n")
}

// dashboardJSON is the part of the Grafana dashboard model the tests look at.
type dashboardJSON struct {
	Inputs []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasourceRef  `json:"datasource"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panelJSON `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panelJSON struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panelJSON `json:"panels"`
}

func loadDashboard(t *testing.T) dashboardJSON {
	t.Helper()
	var d dashboardJSON
	if err := json.Unmarshal([]byte(readFile(t, dashboard)), &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	return d
}

func allPanels(ps []panelJSON) []panelJSON {
	var out []panelJSON
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardQueries returns every PromQL expression of the dashboard: panel targets and
// template variable queries, keyed by where they are.
func dashboardQueries(t *testing.T, d dashboardJSON) map[string]string {
	t.Helper()
	q := map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			q[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			var s string
			var obj struct{ Query string }
			if json.Unmarshal(v.Query, &s) != nil {
				if err := json.Unmarshal(v.Query, &obj); err != nil {
					t.Fatalf("variable %s: query %s", v.Name, v.Query)
				}
				s = obj.Query
			}
			q["$"+v.Name] = s
		}
	}
	return q
}

// TestDashboardImportable: the dashboard has what Grafana's importer and the brief need:
// a DS_PROMETHEUS input, datasource and instance variables, panels bound to the
// datasource variable, unique ids and refIds, a layout inside 24 columns without
// overlaps, and a panel for every group of metrics operators watch.
func TestDashboardImportable(t *testing.T) {
	d := loadDashboard(t)
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one prometheus datasource DS_PROMETHEUS", d.Inputs)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a recent one (>= 36, Grafana 9+)", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Name {
		case "datasource":
			if v.Type != "datasource" || string(v.Query) != `"prometheus"` || v.Current.Value != "${DS_PROMETHEUS}" {
				t.Errorf("datasource variable: type %q query %s current %v", v.Type, v.Query, v.Current.Value)
			}
		case "instance", "job":
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("%s variable datasource %+v", v.Name, v.Datasource)
			}
		}
		// The job variable defaults to the job the shipped scrape config defines.
		if v.Name == "job" && v.Current.Value != scrapeJob(t) {
			t.Errorf("job variable defaults to %v, want %q (the job_name in %s/prometheus.yml)", v.Current.Value, scrapeJob(t), promDir)
		}
	}
	if !vars["datasource"] || !vars["job"] || !vars["instance"] {
		t.Errorf("template variables %v, want datasource, job and instance", vars)
	}
	if q := dashboardQueries(t, d)["$job"]; q != "label_values(relay_build_info, job)" {
		t.Errorf("job variable query %q", q)
	}
	if q := dashboardQueries(t, d)["$instance"]; q != `label_values(relay_build_info{job="$job"}, instance)` {
		t.Errorf("instance variable query %q", q)
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	occupied := map[cell]string{}
	for _, p := range allPanels(d.Panels) {
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := occupied[cell{x, y}]; taken {
					t.Fatalf("panels %q and %q overlap at %d,%d", p.Title, other, x, y)
				}
				occupied[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || tg.Expr == "" {
				t.Errorf("panel %q: target refId %q expr %q", p.Title, tg.RefID, tg.Expr)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q/%s: datasource %+v", p.Title, tg.RefID, tg.Datasource)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q/%s ignores the instance variable: %s", p.Title, tg.RefID, tg.Expr)
			}
			// Without the job, a Prometheus that also scrapes itself (Debian's default)
			// mixes its own up, process_* and go_* series into the panels.
			for _, sel := range withoutMatcher(tg.Expr, `job="$job"`) {
				t.Errorf("panel %q/%s: %s selects no job (want job=\"$job\"): %s", p.Title, tg.RefID, sel, tg.Expr)
			}
		}
	}

	used := map[string]bool{}
	for _, q := range dashboardQueries(t, d) {
		for _, n := range metricNames(q) {
			used[n] = true
		}
	}
	// What the dashboard must show (the operations brief's list).
	for _, want := range []string{
		"relay_turn_allocations_active", "relay_turn_allocations_total", "relay_turn_relayed_bytes_total",
		"relay_turn_relayed_packets_total", "relay_turn_auth_failures_total", "relay_turn_peer_denied_total",
		"relay_turn_quota_rejections_total", "relay_turn_allocation_duration_seconds_bucket", "relay_turn_requests_total",
		"relay_signal_peers_connected", "relay_signal_messages_total", "relay_ice_credentials_issued_total",
		"relay_ice_requests_denied_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"process_open_fds", "process_max_fds", "relay_build_info", "relay_draining", "relay_config_reload_total",
		// The fleet overview row.
		"relay_cluster_nodes", "relay_cluster_backend_up", "relay_cluster_messages_sent_total",
		"relay_cluster_messages_received_total", "relay_cluster_backend_errors_total", "relay_turn_allocations_limit",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	for _, q := range dashboardQueries(t, d) {
		if strings.Contains(q, "histogram_quantile") && !strings.Contains(q, "by (le)") {
			t.Errorf("histogram_quantile without sum by (le): %s", q)
		}
	}
}

// scrapeJob is the job_name of the shipped scrape config.
func scrapeJob(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*- job_name:\s*(\S+)\s*$`).FindAllStringSubmatch(readFile(t, promDir+"/prometheus.yml"), -1)
	if len(m) != 1 {
		t.Fatalf("%s/prometheus.yml: want one job_name, found %d", promDir, len(m))
	}
	return strings.Trim(m[0][1], `"'`)
}

// withoutMatcher returns each metric selector of a PromQL expression (the metric name
// and its {...}) that lacks the label matcher want, written exactly. Loose like
// metricNames: string literals are skipped when looking for names and braces.
func withoutMatcher(expr, want string) []string {
	// Blank out string literals without moving anything, so offsets stay valid.
	blank := quoted.ReplaceAllStringFunc(expr, func(q string) string {
		return q[:1] + strings.Repeat("_", len(q)-2) + q[len(q)-1:]
	})
	var out []string
	for _, loc := range metricName.FindAllStringIndex(blank, -1) {
		sel := expr[loc[0]:loc[1]]
		if rest := blank[loc[1]:]; strings.HasPrefix(rest, "{") {
			if end := strings.IndexByte(rest, '}'); end >= 0 {
				sel = expr[loc[0] : loc[1]+end+1]
			}
		}
		matchers := strings.TrimSuffix(strings.TrimPrefix(sel[loc[1]-loc[0]:], "{"), "}")
		found := false
		for _, m := range strings.Split(matchers, ",") {
			found = found || strings.TrimSpace(m) == want
		}
		if !found {
			out = append(out, sel)
		}
	}
	return out
}

// TestWithoutMatcher: the job check finds a selector that lacks the matcher wherever it
// is in an expression, and is not fooled by a matcher inside a string.
func TestWithoutMatcher(t *testing.T) {
	for expr, want := range map[string]string{
		`up{job="$job", instance=~"$instance"}`: "",
		`up{instance=~"$instance"}`:             `up{instance=~"$instance"}`,
		`process_open_fds`:                      "process_open_fds",
		`sum(relay_turn_allocations_active{job="$job"}) / sum(relay_turn_allocations_limit{instance=~".+"} > 0)`: `relay_turn_allocations_limit{instance=~".+"}`,
		`go_goroutines{instance=~"job=\"$job\""}`:                                          `go_goroutines{instance=~"job=\"$job\""}`,
		`sum by (reason) (rate(relay_turn_dropped_total{instance=~"$i", job="$job"}[5m]))`: "",
	} {
		got := strings.Join(withoutMatcher(expr, `job="$job"`), " ")
		if got != want {
			t.Errorf("withoutMatcher(%s) = %q, want %q", expr, got, want)
		}
	}
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	metricName = regexp.MustCompile(`\b(relay_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+|up)\b`)
)

// metricNames picks the metric names out of a PromQL expression, loosely: identifiers
// that look like relay's, the process and Go collectors' or up, outside string literals
// (label values such as kind="relay_ports" are not metrics).
func metricNames(expr string) []string {
	expr = quoted.ReplaceAllString(expr, `""`)
	seen := map[string]bool{}
	var out []string
	for _, m := range metricName.FindAllString(expr, -1) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

// knownMetrics is every metric family relay's registry can export, from the collectors'
// descriptors (so label vectors count before they have children), and which of them are
// histograms or summaries (whose _bucket/_sum/_count series a query may name). A fleet
// node also registers the cluster package's collectors ([cluster] redis): their names
// come from their descriptors too, without a Redis (describing reads no value).
func knownMetrics(t *testing.T) (names, histograms map[string]bool) {
	t.Helper()
	m := metrics.New("test", "test")
	names, histograms = map[string]bool{}, map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() {
		m.Registry.Describe(ch)
		for _, c := range new(cluster.Registry).Collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if s := fq.FindStringSubmatch(d.String()); s != nil {
			names[s[1]] = true
		}
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		names[f.GetName()] = true
		switch f.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM", "SUMMARY":
			histograms[f.GetName()] = true
		}
	}
	if !histograms["relay_turn_allocation_duration_seconds"] {
		t.Fatalf("relay_turn_allocation_duration_seconds is not a histogram in the registry")
	}
	if !names["relay_turn_auth_failures_total"] || !names["process_open_fds"] || !names["go_goroutines"] || !names["relay_cluster_backend_up"] {
		t.Fatalf("registry descriptors look incomplete: %v", sortedKeys(names))
	}
	return names, histograms
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestMetricNamesExist: every metric the dashboard and the alert rules query is one relay
// exports (or up, which Prometheus adds). A renamed metric, or a typo in a panel, fails
// here instead of drawing an empty graph.
func TestMetricNamesExist(t *testing.T) {
	names, histograms := knownMetrics(t)
	known := func(n string) bool {
		if n == "up" || names[n] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && histograms[base] {
				return true
			}
		}
		return false
	}
	queries := dashboardQueries(t, loadDashboard(t))
	for name, r := range alertRules(t, readFile(t, alertsFile)) {
		queries["alert "+name] = r.expr
	}
	checked := 0
	for where, q := range queries {
		found := metricNames(q)
		if len(found) == 0 {
			t.Errorf("%s: no metric in %q", where, q)
		}
		for _, n := range found {
			checked++
			if !known(n) {
				t.Errorf("%s uses %s, which relay does not export", where, n)
			}
		}
	}
	// The checker itself: a misspelt name and a label value must be told apart.
	if known("relay_turn_allocation_active") || !known("relay_turn_allocation_duration_seconds_bucket") || known("relay_turn_allocations_active_bucket") {
		t.Fatal("known() is not discriminating")
	}
	if got := metricNames(`sum(relay_turn_quota_rejections_total{kind="relay_ports"})`); len(got) != 1 {
		t.Fatalf("metricNames took a label value for a metric: %v", got)
	}
	t.Logf("%d metric references in %d queries checked", checked, len(queries))
}

// TestDashboardFleet: the dashboard works for a fleet. The Node variable (instance)
// takes several nodes or All; a Fleet row holds the panels of the cluster metrics; and
// each of those panels, whose series a single node does not export, says so through
// Grafana's no-value text instead of a bare "No data".
func TestDashboardFleet(t *testing.T) {
	var d struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Multi      bool   `json:"multi"`
				IncludeAll bool   `json:"includeAll"`
				AllValue   string `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Type        string
			Title       string
			FieldConfig struct {
				Defaults struct {
					NoValue string `json:"noValue"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct{ Expr string }
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(readFile(t, dashboard)), &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range d.Templating.List {
		if v.Name == "instance" {
			found = true
			if !v.Multi || !v.IncludeAll || v.AllValue != ".+" {
				t.Errorf("instance variable: multi %v, includeAll %v, allValue %q; want several nodes or All (.+)", v.Multi, v.IncludeAll, v.AllValue)
			}
		}
	}
	if !found {
		t.Error("no instance variable")
	}
	row, fleet := "", 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			row = p.Title
			continue
		}
		cluster := false
		for _, tg := range p.Targets {
			for _, n := range metricNames(tg.Expr) {
				cluster = cluster || strings.HasPrefix(n, "relay_cluster_")
			}
		}
		if !cluster {
			continue
		}
		fleet++
		if row != "Fleet" {
			t.Errorf("panel %q shows cluster metrics outside the Fleet row (in %q)", p.Title, row)
		}
		if !strings.Contains(p.FieldConfig.Defaults.NoValue, "Single node") {
			t.Errorf("panel %q: no-value text %q, want one saying a single node has no fleet", p.Title, p.FieldConfig.Defaults.NoValue)
		}
	}
	if fleet < 6 {
		t.Errorf("%d panels show cluster metrics, want the fleet row's (nodes, backend, messages, errors)", fleet)
	}
}
