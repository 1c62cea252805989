package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/internal/testpeer"
	"github.com/relayproject/relay/relay"
)

// The operator's tests (issue 13): the built binary's admin API driven with `relay
// admin` and plain HTTP, against pion's TURN client and coturn's turnutils_uclient.

// admin runs `relay admin -url <p's admin API> args...` and returns its output.
func (p *relayProc) admin(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.adminErr(args...)
	if err != nil {
		t.Fatalf("relay admin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (p *relayProc) adminErr(args ...string) (string, error) {
	cmd := exec.Command(relayBin, append([]string{"admin", "-url", "http://" + p.addr("admin")}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// adminJSON GETs path from p's admin API into out.
func (p *relayProc) adminJSON(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr("admin") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

func (p *relayProc) allocations(t *testing.T, user string) []relay.AllocationInfo {
	t.Helper()
	var list []relay.AllocationInfo
	p.adminJSON(t, "/v1/allocations?user="+user, &list)
	return list
}

type apiRefusal struct {
	Source, Transport, Method, User, Username, Reason string
}

func (p *relayProc) failures(t *testing.T, user string) []apiRefusal {
	t.Helper()
	var list []apiRefusal
	p.adminJSON(t, "/v1/auth-failures?user="+user, &list)
	return list
}

// stunCode is the STUN error code of an Allocate error from pion's client (0: none).
func stunCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

// refreshCode sends an unauthenticated Refresh on s's 5-tuple and returns the error
// code: 401 (a challenge) while the allocation exists, 437 once it is gone.
func refreshCode(t *testing.T, s *turnSession, server string) int {
	t.Helper()
	msg := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), stun.Fingerprint)
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.client.PerformTransaction(msg, to, false)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(res.Msg) != nil {
		return 0
	}
	return int(ec.Code)
}

// eventStream follows `relay admin events -json` and collects the events.
type eventStream struct {
	mu     sync.Mutex
	events []map[string]any
	cmd    *exec.Cmd
	done   chan struct{}
}

func followEvents(t *testing.T, p *relayProc) *eventStream {
	t.Helper()
	es := &eventStream{cmd: exec.Command(relayBin, "admin", "-url", "http://"+p.addr("admin"), "-json", "events"), done: make(chan struct{})}
	out, err := es.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := es.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(es.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				es.mu.Lock()
				es.events = append(es.events, m)
				es.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { _ = es.cmd.Process.Kill(); <-es.done; _ = es.cmd.Wait() })
	return es
}

// find returns the first event of type typ whose field k is v.
func (es *eventStream) find(typ, k, v string) map[string]any {
	es.mu.Lock()
	defer es.mu.Unlock()
	for _, e := range es.events {
		if e["type"] == typ && e[k] == v {
			return e
		}
	}
	return nil
}

// TestAdminAllocationsAndKill: with pion's TURN client streaming through relay, `relay
// admin allocations` lists the allocation (table and JSON); `relay admin kill ID` ends
// it: the stream stops, the client's next request gets 437, the allocation log says
// reason=admin, and the event stream saw it made and ended.
func TestAdminAllocationsAndKill(t *testing.T) {
	p := startRelay(t, baseConfig(""))
	es := followEvents(t, p)
	// The stream is open once it carries an event: refusals of a made-up user, until one
	// shows up.
	waitFor(t, "the event stream to carry a refusal", func() bool {
		_, _ = dialTURN(t, p.addr("udp"), "probe", "x")
		return es.find("auth_failure", "user", "probe") != nil
	})
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	sess, got := flowThrough(t, p, a, "carol")

	var list []relay.AllocationInfo
	waitFor(t, "carol's allocation listed with its traffic", func() bool {
		list = p.allocations(t, "carol")
		return len(list) == 1 && list[0].BytesClientToPeer > 0 && list[0].BytesPeerToClient > 0 && list[0].BPSClientToPeer > 0
	})
	al := list[0]
	if al.Transport != "udp" || al.Client != sess.conn.LocalAddr().String() || al.Permissions != 1 || al.Channels != 1 ||
		al.ExpiresCredential == nil || al.LifetimeLeftS <= 0 || !strings.HasSuffix(al.Username, ":carol") {
		t.Errorf("listed %+v", al)
	}
	// The names, as an outside client reads them.
	var raw []map[string]any
	p.adminJSON(t, "/v1/allocations?user=carol", &raw)
	for _, k := range []string{"id", "user", "expires_credential", "client", "transport", "relay", "created", "lifetime_left_s",
		"permissions", "channels", "bytes_client_to_peer", "bytes_peer_to_client", "packets_client_to_peer",
		"packets_peer_to_client", "bps_client_to_peer", "bps_peer_to_client"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("GET /v1/allocations has no %q: %v", k, raw[0])
		}
	}
	table := p.admin(t, "allocations")
	if !strings.HasPrefix(table, "ID ") || !regexp.MustCompile(`(?m)^`+al.ID+` +carol +udp +`+al.Client+` `).MatchString(table) {
		t.Errorf("relay admin allocations:\n%s", table)
	}
	if code := refreshCode(t, sess, p.addr("udp")); code != 401 {
		t.Fatalf("unauthenticated Refresh on a live allocation: %d, want 401", code)
	}

	if out := p.admin(t, "kill", al.ID); out != "ended allocation "+al.ID+"\n" {
		t.Errorf("relay admin kill: %q", out)
	}
	if code := refreshCode(t, sess, p.addr("udp")); code != 437 {
		t.Errorf("Refresh after kill: %d, want 437", code)
	}
	n := got.Load()
	time.Sleep(300 * time.Millisecond) // the stream's pace is 10 ms: 30 echoes if it still flowed
	if after := got.Load(); after != n {
		t.Errorf("%d echoes arrived after the allocation was killed", after-n)
	}
	p.waitLog(`"msg":"allocation ended","id":"` + al.ID + `"`)
	if !regexp.MustCompile(`"msg":"allocation ended","id":"` + al.ID + `".*"reason":"admin"`).MatchString(p.log()) {
		t.Errorf("allocation log without reason admin:\n%s", tail(p.log(), 10))
	}
	if len(p.allocations(t, "carol")) != 0 {
		t.Error("carol's allocation still listed")
	}
	if out, err := p.adminErr("kill", al.ID); err == nil || !strings.Contains(out, "404") {
		t.Errorf("killing it again: %v %q, want a 404", err, out)
	}
	waitFor(t, "allocation_created and allocation_ended events", func() bool {
		e := es.find("allocation_ended", "id", al.ID)
		return es.find("allocation_created", "id", al.ID) != nil && e != nil && e["reason"] == "admin"
	})
}

// TestAdminUclient: coturn's turnutils_uclient, mid-run, is listed by `relay admin
// allocations USER`; `relay admin revoke USER` ends its allocations within a second
// (it loses the rest of its packets), and its next Allocate is refused as revoked.
func TestAdminUclient(t *testing.T) {
	uclient := need(t, "turnutils_uclient", "coturn")
	p := startRelay(t, baseConfig("[limits]\nuser_allocations = 20\n"))
	peerPort := startEchoPeer(t)

	run := func(n string) (*exec.Cmd, *bytes.Buffer, chan struct{}) {
		cmd := exec.Command(uclient, "-W", e2eSecret, "-u", "dave", "-e", "127.0.0.1", "-r", strconv.Itoa(peerPort),
			"-m", "2", "-n", n, "-l", "120", "-c", "-p", p.port("udp"), "127.0.0.1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return cmd, &out, done
	}
	// uclient sends about 30 messages a second: 400 take some 14 s, revoked after 2.
	_, out, done := run("400")
	var list []relay.AllocationInfo
	waitFor(t, "dave's allocations relaying", func() bool {
		list = p.allocations(t, "dave")
		n := 0
		for _, a := range list {
			if a.Channels > 0 && a.BytesClientToPeer > 0 {
				n++
			}
		}
		return n == 2
	})
	table := p.admin(t, "allocations", "dave")
	if n := len(regexp.MustCompile(`(?m)^[0-9a-f]{16} +dave +udp +127\.0\.0\.1:`).FindAllString(table, -1)); n != len(list) {
		t.Errorf("relay admin allocations dave lists %d of %d:\n%s", n, len(list), table)
	}
	start := time.Now()
	res := p.admin(t, "revoke", "dave")
	if !strings.HasPrefix(res, "revoked user dave until ") {
		t.Errorf("relay admin revoke: %q", res)
	}
	waitFor(t, "dave's allocations to end", func() bool { return len(p.allocations(t, "dave")) == 0 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("dave's allocations ended %v after the revocation, want within 1 s", d)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("turnutils_uclient still running a minute after the revocation")
	}
	if m := regexp.MustCompile(`Total lost packets (\d+)`).FindStringSubmatch(out.String()); m != nil && m[1] == "0" {
		t.Errorf("turnutils_uclient lost nothing although its allocations were revoked:\n%s", tail(out.String(), 10))
	}
	// A new run is refused: its Allocate gets 401.
	_, out2, done2 := run("10")
	select {
	case <-done2:
	case <-time.After(30 * time.Second):
		t.Fatal("turnutils_uclient still running 30 s after starting revoked")
	}
	if f := p.failures(t, "dave"); len(f) == 0 || f[0].Reason != "revoked" || f[0].Method != "allocate" {
		t.Errorf("failures of dave: %+v\nuclient:\n%s", f, tail(out2.String(), 5))
	}
}

// TestAdminRevokeSurvivesRestart: a revoked user's live allocation (pion's client,
// streaming) ends within a second; new Allocates get 401, also after SIGHUP and after
// relay restarts with the same state_dir; unrevoke lets the user in again.
func TestAdminRevokeSurvivesRestart(t *testing.T) {
	cfg := baseConfig(fmt.Sprintf("[admin]\nlisten = \"127.0.0.1:0\"\nstate_dir = %q\n", t.TempDir()+"/state"))
	p := startRelay(t, cfg)
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	_, got := flowThrough(t, p, a, "eve")

	start := time.Now()
	if out := p.admin(t, "revoke", "eve"); !strings.Contains(out, "1 allocations ended on this node") {
		t.Errorf("relay admin revoke eve: %q", out)
	}
	// The stream's echoes stop: nothing arrives once a second has passed.
	last := got.Load()
	lastAt := time.Now()
	for time.Since(start) < 2*time.Second {
		if n := got.Load(); n != last {
			last, lastAt = n, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := lastAt.Sub(start); d > time.Second {
		t.Errorf("echoes still arrived %v after the revocation, want none after 1 s", d)
	}
	if !regexp.MustCompile(`"msg":"allocation ended".*"user":"eve".*"reason":"revoked"`).MatchString(p.log()) {
		t.Errorf("no allocation log line with reason revoked:\n%s", tail(p.log(), 10))
	}
	allocate := func(p *relayProc) int {
		c, _ := a.Mint("eve", time.Hour)
		_, err := dialTURN(t, p.addr("udp"), c.Username, c.Password)
		return stunCode(err)
	}
	if code := allocate(p); code != 401 {
		t.Errorf("Allocate with fresh credentials of revoked eve: %d, want 401", code)
	}
	// A reload keeps it.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`"msg":"config reloaded"`)
	if code := allocate(p); code != 401 {
		t.Errorf("after SIGHUP, Allocate of revoked eve: %d, want 401", code)
	}
	p.stop(syscall.SIGTERM)

	p2 := startRelay(t, cfg)
	if code := allocate(p2); code != 401 {
		t.Errorf("after a restart, Allocate of revoked eve: %d, want 401", code)
	}
	if out := p2.admin(t, "revocations"); !regexp.MustCompile(`(?m)^eve +- +\S+ \S+ +\S+ \S+ +admin$`).MatchString(out) {
		t.Errorf("relay admin revocations after the restart:\n%s", out)
	}
	if f := p2.failures(t, "eve"); len(f) != 1 || f[0].Reason != "revoked" {
		t.Errorf("failures of eve: %+v", f)
	}
	if out := p2.admin(t, "unrevoke", "eve"); out != "lifted the revocation of eve\n" {
		t.Errorf("relay admin unrevoke: %q", out)
	}
	if code := allocate(p2); code != 0 {
		t.Errorf("Allocate after unrevoke: %d, want success", code)
	}
}

// TestAdminFailures: GET /v1/auth-failures names the right reason for each kind of
// refusal, per user, newest first; `relay admin failures USER` prints them.
func TestAdminFailures(t *testing.T) {
	p := startRelay(t, baseConfig("[limits]\nuser_allocations = 1\n"))
	now := time.Now().Unix()
	rest := func(expiry int64, user, secret string) (string, string) {
		name := strconv.FormatInt(expiry, 10) + ":" + user
		return name, auth.RESTPassword(secret, name)
	}
	try := func(user, pass string) int {
		_, err := dialTURN(t, p.addr("udp"), user, pass)
		return stunCode(err)
	}
	cases := []struct {
		user, pass, id, reason string
		code                   int
	}{}
	add := func(name, pass, id, reason string, code int) {
		cases = append(cases, struct {
			user, pass, id, reason string
			code                   int
		}{name, pass, id, reason, code})
	}
	u, pw := rest(now-60, "old", e2eSecret)
	add(u, pw, "old", "expired", 401)
	u, pw = rest(now+7*24*3600, "future", e2eSecret)
	add(u, pw, "future", "too_far_future", 401)
	u, pw = rest(now+600, "guess", "not-the-secret")
	add(u, pw, "guess", "bad_password", 401)
	add("nobody", "x", "nobody", "malformed", 401)
	for _, c := range cases {
		if code := try(c.user, c.pass); code != c.code {
			t.Errorf("%s: Allocate %d, want %d", c.reason, code, c.code)
		}
	}
	u, pw = rest(now+600, "one", e2eSecret)
	if code := try(u, pw); code != 0 {
		t.Fatalf("first allocation of one: %d", code)
	}
	if code := try(u, pw); code != 486 {
		t.Errorf("second allocation of one: %d, want 486", code)
	}
	add(u, pw, "one", "quota", 486)
	p.admin(t, "revoke", "mallory")
	u, pw = rest(now+600, "mallory", e2eSecret)
	if code := try(u, pw); code != 401 {
		t.Errorf("revoked mallory: %d, want 401", code)
	}
	add(u, pw, "mallory", "revoked", 401)
	for _, c := range cases {
		f := p.failures(t, c.id)
		if len(f) == 0 || f[0].Reason != c.reason || f[0].Method != "allocate" || f[0].Transport != "udp" || !strings.HasPrefix(f[0].Source, "127.0.0.1:") {
			t.Errorf("failures of %s: %+v, want %s first", c.id, f, c.reason)
		}
	}
	if out := p.admin(t, "failures", "future"); !regexp.MustCompile(`(?m)^TIME +SOURCE +TRANSPORT +METHOD +USER +REASON\n.*127\.0\.0\.1:\d+ +udp +allocate +future +too_far_future$`).MatchString(out) {
		t.Errorf("relay admin failures future:\n%s", out)
	}
}

// TestAdminBudget: with user_bytes_per_day, relaying stops at the budget (both ways
// counted), the rest is dropped and counted as budget, new Allocates get 486, the
// allocation log says how much was dropped, and the day's usage survives a restart.
func TestAdminBudget(t *testing.T) {
	const budget = 40_000
	cfg := baseConfig(fmt.Sprintf("[limits]\nuser_bytes_per_day = %d\n[admin]\nlisten = \"127.0.0.1:0\"\nstate_dir = %q\n", budget, t.TempDir()))
	p := startRelay(t, cfg)
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	c, _ := a.Mint("frank", time.Hour)
	sess, err := dialTURN(t, p.addr("udp"), c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := testpeer.Echo(t)
	payload := make([]byte, 1000)
	buf := make([]byte, 2048)
	echoed, misses := 0, 0
	for misses < 3 {
		if _, err := sess.relay.WriteTo(payload, peer); err != nil {
			t.Fatal(err)
		}
		_ = sess.relay.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := sess.relay.ReadFrom(buf); err != nil {
			misses++
			continue
		}
		echoed, misses = echoed+1, 0
		if echoed > 100 {
			t.Fatal("still relaying after 100 kB each way: no budget")
		}
	}
	// 1000 bytes each way per echo: 20 echoes use the 40 kB.
	if echoed != 20 {
		t.Errorf("%d echoes came back, want 20 within a budget of %d bytes", echoed, budget)
	}
	if m := p.metrics(); m[`relay_turn_dropped_total{reason="budget"}`] < 3 {
		t.Errorf(`relay_turn_dropped_total{reason="budget"} = %v, want the datagrams sent past the budget`, m[`relay_turn_dropped_total{reason="budget"}`])
	}
	waitFor(t, "frank over budget in /v1/usage", func() bool {
		out := p.admin(t, "usage", "frank")
		return regexp.MustCompile(`(?m)^frank +40\.0 kB +40000 +yes$`).MatchString(out)
	})
	out := p.admin(t, "usage")
	if !strings.Contains(out, "budget 40.0 kB per user id, resets ") {
		t.Errorf("relay admin usage:\n%s", out)
	}
	p.waitLog(`byte budget used`)
	c2, _ := a.Mint("frank", time.Hour)
	if _, err := dialTURN(t, p.addr("udp"), c2.Username, c2.Password); stunCode(err) != 486 {
		t.Errorf("Allocate over the budget: %v, want 486", err)
	}
	if f := p.failures(t, "frank"); len(f) == 0 || f[0].Reason != "over_budget" {
		t.Errorf("failures of frank: %+v", f)
	}
	sess.close()
	if !regexp.MustCompile(`"msg":"allocation ended".*"user":"frank".*"dropped_budget":[1-9]`).MatchString(p.log()) {
		p.waitLog(`"dropped_budget"`)
	}
	p.stop(syscall.SIGTERM)

	p2 := startRelay(t, cfg)
	var rep struct {
		Budget int64
		Users  []struct {
			User       string
			Bytes      int64
			OverBudget bool `json:"over_budget"`
		}
	}
	p2.adminJSON(t, "/v1/usage?user=frank", &rep)
	if rep.Budget != budget || len(rep.Users) != 1 || rep.Users[0].Bytes != budget || !rep.Users[0].OverBudget {
		t.Errorf("usage after a restart: %+v", rep)
	}
	c3, _ := a.Mint("frank", time.Hour)
	if _, err := dialTURN(t, p2.addr("udp"), c3.Username, c3.Password); stunCode(err) != 486 {
		t.Errorf("Allocate over the budget after a restart: %v, want 486", err)
	}
}

// TestAdminAccess: with admin.tokens the API wants one (401 without, never echoing
// it); a request a web page could send (Origin) is refused; the token never reaches the
// log; off loopback without tokens relay refuses to start, naming the key.
func TestAdminAccess(t *testing.T) {
	const token = "admin-token-0123456789abcdef0123456789"
	p := startRelay(t, baseConfig(fmt.Sprintf("[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [%q]\n", token)))
	get := func(hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr("admin")+"/v1/allocations", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(nil); code != 401 || !strings.Contains(body, `"error"`) {
		t.Errorf("no token: %d %s", code, body)
	}
	if code, body := get(map[string]string{"Authorization": "Bearer wrong" + token}); code != 401 || strings.Contains(body, token) {
		t.Errorf("wrong token: %d %s", code, body)
	}
	if code, _ := get(map[string]string{"Authorization": "Bearer " + token}); code != 200 {
		t.Errorf("right token: %d", code)
	}
	if code, _ := get(map[string]string{"Authorization": "Bearer " + token, "Origin": "https://evil.example"}); code != 403 {
		t.Errorf("with an Origin: %d, want 403", code)
	}
	out, err := p.adminErr("allocations")
	if err == nil || !strings.Contains(out, "401") {
		t.Errorf("relay admin without -token: %v %q", err, out)
	}
	cmd := exec.Command(relayBin, "admin", "-url", "http://"+p.addr("admin"), "allocations")
	cmd.Env = append(cmd.Environ(), "RELAY_ADMIN_TOKEN="+token)
	if b, err := cmd.CombinedOutput(); err != nil || string(b) != "no allocations\n" {
		t.Errorf("relay admin with RELAY_ADMIN_TOKEN: %v %q", err, b)
	}
	if strings.Contains(p.log(), token[6:]) {
		t.Errorf("the token is in the log:\n%s", p.log())
	}

	bad := exec.Command(relayBin, "-config", writeTemp(t, baseConfig("[admin]\nlisten = \"0.0.0.0:0\"\n")))
	b, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(b), `admin.listen = "0.0.0.0:0": is not a loopback address and admin.tokens is empty`) {
		t.Errorf("off loopback without tokens: %v\n%s", err, b)
	}
}

// flowThrough allocates for user with pion's client and sends a datagram every 10 ms
// to an echo peer until the test ends, counting the echoes; it returns once they flow.
// Unlike streamThrough it expects the flow to be cut.
func flowThrough(t *testing.T, p *relayProc, a *auth.Authenticator, user string) (*turnSession, *atomic.Int64) {
	t.Helper()
	c, err := a.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := dialTURN(t, p.addr("udp"), c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := testpeer.Echo(t)
	got := new(atomic.Int64)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := sess.relay.ReadFrom(buf); err != nil {
				select {
				case <-stop:
					return
				default:
					time.Sleep(time.Millisecond) // a transient error: not a busy loop
					continue
				}
			}
			got.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = sess.relay.WriteTo([]byte("flow"), peer)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		_ = sess.relay.SetReadDeadline(time.Now())
		wg.Wait()
	})
	waitFor(t, "the flow through "+user+"'s allocation", func() bool { return got.Load() > 10 })
	return sess, got
}

// writeTemp writes s to a file in the test's temporary directory.
func writeTemp(t *testing.T, s string) string {
	t.Helper()
	path := t.TempDir() + "/relay.toml"
	writeConfig(t, path, s)
	return path
}

// TestAdminFleetRevocation: two relay nodes sharing a redis-server. A revocation made
// through node 1's admin API ends an allocation on node 2 within a second (its flow
// stops, its log says reason=revoked) and node 2 refuses the user's next Allocate;
// node 1 reports the bytes node 2 relayed for the user.
func TestAdminFleetRevocation(t *testing.T) {
	url := startRedisServer(t)
	n1 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n1\"\n"))
	n2 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n2\"\n"))
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	_, got := flowThrough(t, n2, a, "grace")
	waitFor(t, "node 1 to see the bytes node 2 relayed for grace", func() bool {
		var rep struct{ Users []struct{ Bytes int64 } }
		n1.adminJSON(t, "/v1/usage?user=grace", &rep)
		return len(rep.Users) == 1 && rep.Users[0].Bytes > 0
	})

	start := time.Now()
	if out := n1.admin(t, "revoke", "grace"); !strings.Contains(out, "0 allocations ended on this node") {
		t.Errorf("relay admin revoke on node 1: %q", out)
	}
	waitFor(t, "node 2 to end grace's allocation", func() bool { return len(n2.allocations(t, "grace")) == 0 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("node 2 ended the allocation %v after the revocation on node 1, want within 1 s", d)
	}
	n := got.Load()
	time.Sleep(200 * time.Millisecond) // 20 datagrams at the flow's pace
	if got.Load() != n {
		t.Errorf("node 2 still relayed for grace after its allocation ended")
	}
	if !regexp.MustCompile(`"msg":"allocation ended".*"user":"grace".*"reason":"revoked"`).MatchString(n2.log()) {
		t.Errorf("node 2's allocation log:\n%s", tail(n2.log(), 10))
	}
	c, _ := a.Mint("grace", time.Hour)
	if _, err := dialTURN(t, n2.addr("udp"), c.Username, c.Password); stunCode(err) != 401 {
		t.Errorf("Allocate of revoked grace on node 2: %v, want 401", err)
	}
	var revs []struct{ User string }
	n2.adminJSON(t, "/v1/revocations", &revs)
	if len(revs) != 1 || revs[0].User != "grace" {
		t.Errorf("node 2's revocations: %+v", revs)
	}
}
