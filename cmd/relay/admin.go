package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/relayproject/relay/admin"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/relay"
)

// relay admin: a client of the admin API ([admin] listen) for people at a terminal:
// tables by default, the API's JSON with -json.

func adminUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: relay admin [-url U] [-token T] [-json] COMMAND

Commands:
  allocations [USER]   live allocations (of one user id)
  events               follow allocations created and ended, refusals and revocations
  kill ID              end an allocation now (its client's next request gets 437)
  revoke USER          revoke a user id, or one credential "<expiry>:<id>", on every node
  unrevoke USER        lift a revocation
  revocations          revocations in force
  failures [USER]      the last refused requests and why
  usage [USER]         bytes relayed today per user id, and the budget

Flags:
  -url U     the admin API (default `+"$RELAY_ADMIN_URL"+`, else http://`+config.DefaultAdminListen+`)
  -token T   a bearer token of [admin] tokens (default $RELAY_ADMIN_TOKEN; the
             environment keeps it out of the process list)
  -json      print the API's JSON instead of a table
`)
}

// adminClient talks to the admin API.
type adminClient struct {
	base   string
	token  string
	json   bool
	stdout io.Writer
	http   *http.Client
}

func adminCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay admin", flag.ContinueOnError)
	base := fs.String("url", "", "admin API base URL")
	token := fs.String("token", "", "bearer token")
	asJSON := fs.Bool("json", false, "print JSON")
	// Flags may come before the command or after it (relay admin allocations -json).
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			rest = append(rest, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
			if name := strings.TrimLeft(a, "-"); (name == "url" || name == "token") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			rest = append(rest, a)
		}
	}
	if err := parseFlags(fs, flags, adminUsage, stdout, stderr); err != nil {
		return err
	}
	if len(rest) == 0 {
		fmt.Fprintf(stderr, "relay: relay admin needs a command\n\n")
		adminUsage(stderr)
		return &usageError{msg: "relay admin needs a command", printed: true}
	}
	c := &adminClient{base: *base, token: *token, json: *asJSON, stdout: stdout, http: &http.Client{Timeout: 15 * time.Second}}
	if c.base == "" {
		c.base = os.Getenv("RELAY_ADMIN_URL")
	}
	if c.base == "" {
		c.base = "http://" + config.DefaultAdminListen
	}
	c.base = strings.TrimRight(c.base, "/")
	if c.token == "" {
		c.token = os.Getenv("RELAY_ADMIN_TOKEN")
	}
	verb, params := rest[0], rest[1:]
	arity := map[string][2]int{"allocations": {0, 1}, "events": {0, 0}, "kill": {1, 1}, "revoke": {1, 1},
		"unrevoke": {1, 1}, "revocations": {0, 0}, "failures": {0, 1}, "usage": {0, 1}}
	n, ok := arity[verb]
	bad := ""
	switch {
	case !ok:
		bad = fmt.Sprintf("relay admin: unknown command %q", verb)
	case len(params) < n[0] || len(params) > n[1]:
		bad = fmt.Sprintf("relay admin %s takes %s", verb, map[[2]int]string{{0, 0}: "no argument", {0, 1}: "at most one argument", {1, 1}: "one argument"}[n])
	}
	if bad != "" {
		fmt.Fprintf(stderr, "relay: %s\n\n", bad)
		adminUsage(stderr)
		return &usageError{msg: bad, printed: true}
	}
	arg := ""
	if len(params) > 0 {
		arg = params[0]
	}
	switch verb {
	case "allocations":
		return c.allocations(arg)
	case "events":
		return c.events()
	case "kill":
		return c.kill(arg)
	case "revoke":
		return c.revoke(arg)
	case "unrevoke":
		return c.unrevoke(arg)
	case "revocations":
		return c.revocations()
	case "failures":
		return c.failures(arg)
	default:
		return c.usage(arg)
	}
}

// call makes a request and decodes the JSON answer into out (or prints it with -json).
func (c *adminClient) call(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("admin API URL %q: %w", c.base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API at %s (is relay running with [admin] listen there? -url names another): %w", c.base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if c.json {
		_, err := c.stdout.Write(b)
		return err
	}
	return json.Unmarshal(b, out)
}

func (c *adminClient) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
}

func (c *adminClient) allocations(user string) error {
	var list []relay.AllocationInfo
	if err := c.call(http.MethodGet, withUser("/v1/allocations", user), nil, &list); err != nil || c.json {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no allocations")
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "ID\tUSER\tTRANSPORT\tCLIENT\tRELAY\tAGE\tLEFT\tPERMS\tCHANS\tTO PEER\tTO CLIENT\tRATE UP\tRATE DOWN")
	now := time.Now()
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", a.ID, a.User, a.Transport, a.Client, a.Relay,
			age(now.Sub(a.Created)), age(time.Duration(a.LifetimeLeftS)*time.Second), a.Permissions, a.Channels,
			size(int64(a.BytesClientToPeer)), size(int64(a.BytesPeerToClient)), rate(a.BPSClientToPeer), rate(a.BPSPeerToClient))
	}
	return tw.Flush()
}

func (c *adminClient) kill(id string) error {
	var out struct{ ID string }
	if err := c.call(http.MethodDelete, "/v1/allocations/"+url.PathEscape(id), nil, &out); err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.stdout, "ended allocation %s\n", out.ID)
	return nil
}

func (c *adminClient) revoke(who string) error {
	body := map[string]string{"user": who}
	if _, ok := relay.CredentialExpiry(who); ok {
		body = map[string]string{"username": who}
	}
	var r admin.RevokeResult
	if err := c.call(http.MethodPost, "/v1/revocations", body, &r); err != nil || c.json {
		return err
	}
	what := "user " + r.User
	if r.Username != "" {
		what = "credentials " + r.Username
	}
	fmt.Fprintf(c.stdout, "revoked %s until %s: %d allocations ended on this node (other nodes end theirs within a second)\n",
		what, r.Until.UTC().Format("2006-01-02 15:04:05 MST"), r.AllocationsEnded)
	return nil
}

func (c *adminClient) unrevoke(who string) error {
	var out map[string]any
	if err := c.call(http.MethodDelete, "/v1/revocations/"+url.PathEscape(who), nil, &out); err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.stdout, "lifted the revocation of %s\n", who)
	return nil
}

func (c *adminClient) revocations() error {
	var list []admin.Revocation
	if err := c.call(http.MethodGet, "/v1/revocations", nil, &list); err != nil || c.json {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no revocations")
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "USER\tUSERNAME\tSINCE\tUNTIL\tREASON")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", dash(r.User), dash(r.Username), stamp(r.Created), stamp(r.Until), r.Reason)
	}
	return tw.Flush()
}

func (c *adminClient) failures(user string) error {
	var list []relay.Refusal
	if err := c.call(http.MethodGet, withUser("/v1/auth-failures", user), nil, &list); err != nil || c.json {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no refusals")
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "TIME\tSOURCE\tTRANSPORT\tMETHOD\tUSER\tREASON")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", stamp(r.Time), r.Source, r.Transport, r.Method, dash(r.User), r.Reason)
	}
	return tw.Flush()
}

func (c *adminClient) usage(user string) error {
	var rep admin.UsageReport
	if err := c.call(http.MethodGet, withUser("/v1/usage", user), nil, &rep); err != nil || c.json {
		return err
	}
	budget := "no budget ([limits] user_bytes_per_day = 0)"
	if rep.Budget > 0 {
		budget = "budget " + size(rep.Budget) + " per user id"
	}
	fmt.Fprintf(c.stdout, "%s (UTC), %s, resets %s\n", rep.Day, budget, rep.Resets.UTC().Format("2006-01-02 15:04 MST"))
	if len(rep.Users) == 0 {
		fmt.Fprintln(c.stdout, "nothing relayed today")
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "USER\tRELAYED\tBYTES\tOVER BUDGET")
	for _, u := range rep.Users {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", u.User, size(u.Bytes), u.Bytes, map[bool]string{true: "yes", false: "no"}[u.OverBudget])
	}
	if rep.Truncated {
		fmt.Fprintln(tw, "...\t\t\t")
	}
	return tw.Flush()
}

// events follows /v1/events until the stream ends (the server closes it, or drops a
// reader that falls behind) or the command is interrupted.
func (c *adminClient) events() error {
	req, err := http.NewRequest(http.MethodGet, c.base+"/v1/events", nil)
	if err != nil {
		return fmt.Errorf("admin API URL %q: %w", c.base, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API at %s (is relay running with [admin] listen there? -url names another): %w", c.base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return fmt.Errorf("GET /v1/events: %s: %s", resp.Status, e.Error)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // event names are in the data too; comments keep the stream alive
		}
		if c.json {
			fmt.Fprintln(c.stdout, data)
			continue
		}
		fmt.Fprintln(c.stdout, eventLine(data))
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the admin API ended the event stream (relay stopped, or this reader fell too far behind)")
}

// eventLine renders one event as "time type key=value ...", the fields in the order
// the allocation log uses.
func eventLine(data string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return data
	}
	var b strings.Builder
	t, _ := m["time"].(string)
	if ts, err := time.Parse(time.RFC3339Nano, t); err == nil {
		t = ts.UTC().Format("15:04:05.000")
	}
	typ, _ := m["type"].(string)
	fmt.Fprintf(&b, "%s %-18s", t, typ)
	order := map[string][]string{
		admin.EventAllocationCreated: {"id", "user", "client", "transport", "relay"},
		admin.EventAllocationEnded: {"id", "user", "client", "transport", "relay", "duration", "bytes_client_to_peer",
			"packets_client_to_peer", "bytes_peer_to_client", "packets_peer_to_client", "dropped_budget", "reason"},
		admin.EventAuthFailure: {"source", "transport", "method", "user", "reason"},
		admin.EventRevoked:     {"user", "username", "until", "reason"},
	}[typ]
	for _, k := range order {
		v, ok := m[k]
		if !ok || v == "" {
			continue
		}
		if f, isNum := v.(float64); isNum {
			fmt.Fprintf(&b, " %s=%d", k, int64(f))
		} else {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	return b.String()
}

// withUser adds ?user= to a list route when a user is given.
func withUser(path, user string) string {
	if user == "" {
		return path
	}
	return path + "?user=" + url.QueryEscape(user)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") }

// age is a duration for a table: seconds under a minute, then minutes, then hours.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// size is a byte count in SI units (as disks and network links are sold).
func size(n int64) string {
	return si(float64(n), "B")
}

// rate is a bit rate in SI units.
func rate(bps uint64) string { return si(float64(bps), "bit/s") }

func si(v float64, unit string) string {
	prefixes := []string{"", "k", "M", "G", "T", "P"}
	i := 0
	for v >= 1000 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d %s", int64(v), unit)
	}
	return fmt.Sprintf("%.1f %s%s", v, prefixes[i], unit)
}
