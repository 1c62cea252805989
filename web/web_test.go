package web

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// get serves one request with Path set directly (so tests can use characters a
// request line would carry percent-encoded).
func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "/", nil)
	req.URL.Path = path
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRoutes(t *testing.T) {
	h := Pages{Path: "/sig/", Key: "peerjs"}.Handler()
	cases := []struct{ path, ctype string }{
		{"/sig/demo", "text/html; charset=utf-8"},
		{"/sig/diag", "text/html; charset=utf-8"},
		{"/sig/assets/peerproto.js", "text/javascript; charset=utf-8"},
		{"/sig/assets/demo.js", "text/javascript; charset=utf-8"},
		{"/sig/assets/diag.js", "text/javascript; charset=utf-8"},
		{"/sig/assets/style.css", "text/css; charset=utf-8"},
	}
	for _, c := range cases {
		rec := get(t, h, "GET", c.path, nil)
		if rec.Code != 200 {
			t.Errorf("GET %s: %d, want 200", c.path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if rec.Body.Len() == 0 {
			t.Errorf("GET %s: empty body", c.path)
		}
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", c.path, got)
		}
		head := get(t, h, "HEAD", c.path, nil)
		if head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("Content-Type") != c.ctype {
			t.Errorf("HEAD %s: %d, %d bytes, %q", c.path, head.Code, head.Body.Len(), head.Header().Get("Content-Type"))
		}
	}
}

func TestEveryAssetServed(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	err := fs.WalkDir(files, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rec := get(t, h, "GET", "/"+name, nil)
		if rec.Code != 200 {
			t.Errorf("GET /%s: %d", name, rec.Code)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != assetCacheControl {
			t.Errorf("GET /%s: Cache-Control %q, want %q", name, cc, assetCacheControl)
		}
		if ct := rec.Header().Get("Content-Type"); ct == "application/octet-stream" || ct == "" {
			t.Errorf("GET /%s: Content-Type %q", name, ct)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAssetETag(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	rec := get(t, h, "GET", "/assets/peerproto.js", nil)
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	rec = get(t, h, "GET", "/assets/peerproto.js", map[string]string{"If-None-Match": etag})
	if rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", rec.Code)
	}
}

func TestNotFound(t *testing.T) {
	h := Pages{Path: "/sig/", Key: "peerjs"}.Handler()
	for _, p := range []string{
		"/sig/assets/nope.js",
		"/sig/assets/",
		"/sig/assets",
		"/sig/assets/../web.go",
		"/sig/assets/sub/peerproto.js",
		"/sig/pages/demo.html",
		"/sig/demo/",
		"/sig/demo.html",
		"/sig/diagx",
		"/sig/",
		"/sig/peerjs",
		"/demo",
		"/assets/peerproto.js",
		"/other/demo",
	} {
		if rec := get(t, h, "GET", p, nil); rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	for _, p := range []string{"/demo", "/assets/demo.js"} {
		rec := get(t, h, "POST", p, nil)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: %d, Allow %q", p, rec.Code, rec.Header().Get("Allow"))
		}
	}
}

func TestPageHeaders(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	for _, p := range []string{"/demo", "/diag"} {
		rec := get(t, h, "GET", p, nil)
		csp := rec.Header().Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "style-src 'self'", "connect-src 'self' ws: wss:", "default-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows inline code: %q", p, csp)
		}
		if got := rec.Header().Get("Referrer-Policy"); got != "no-referrer" {
			t.Errorf("%s: Referrer-Policy %q", p, got)
		}
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", p, got)
		}
	}
}

var (
	scriptRE = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`)
	configRE = regexp.MustCompile(`(?is)<script type="application/json" id="config">(.*?)</script>`)
)

// config returns the page's JSON config block, decoded.
func config(t *testing.T, page string) pageConfig {
	t.Helper()
	m := configRE.FindAllStringSubmatch(page, -1)
	if len(m) != 1 {
		t.Fatalf("want 1 config block, found %d", len(m))
	}
	var c pageConfig
	if err := json.Unmarshal([]byte(m[0][1]), &c); err != nil {
		t.Fatalf("config block %q: %v", m[0][1], err)
	}
	return c
}

func TestConfigInjected(t *testing.T) {
	h := Pages{Path: "/signal/", Key: "mykey"}.Handler()
	for _, p := range []string{"/signal/demo", "/signal/diag"} {
		body := get(t, h, "GET", p, nil).Body.String()
		if c := config(t, body); c.Path != "/signal/" || c.Key != "mykey" {
			t.Errorf("%s: config %+v", p, c)
		}
		if !strings.Contains(body, "<code>/signal/") || !strings.Contains(body, "<code>mykey</code>") {
			t.Errorf("%s: path or key not shown in the page", p)
		}
	}
}

func TestConfigEscaped(t *testing.T) {
	path := `/a"b'</script><b>/`
	key := `k</script><script>alert(1)</script>&"'` + "\u2028"
	h := Pages{Path: path, Key: key}.Handler()
	for _, p := range []string{"demo", "diag"} {
		rec := get(t, h, "GET", path+p, nil)
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d", path+p, rec.Code)
		}
		body := rec.Body.String()
		if c := config(t, body); c.Path != path || c.Key != key {
			t.Errorf("%s: config %+v, want path %q key %q", p, c, path, key)
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<b>") {
			t.Errorf("%s: injected markup not escaped", p)
		}
		if opens, closes := strings.Count(body, "<script"), strings.Count(body, "</script"); opens != closes {
			t.Errorf("%s: %d <script vs %d </script", p, opens, closes)
		}
		if !strings.Contains(body, "k&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;") {
			t.Errorf("%s: key not HTML-escaped in the text", p)
		}
	}
}

func TestDefaults(t *testing.T) {
	h := Pages{Path: "sig", Key: ""}.Handler()
	rec := get(t, h, "GET", "/sig/demo", nil)
	if rec.Code != 200 {
		t.Fatalf("GET /sig/demo with Path \"sig\": %d", rec.Code)
	}
	if c := config(t, rec.Body.String()); c.Path != "/sig/" || c.Key != "peerjs" {
		t.Errorf("config %+v", c)
	}
	for in, want := range map[string]string{"": "/", "/": "/", "a": "/a/", "/a": "/a/", "a/": "/a/", "/a/b/": "/a/b/"} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNoInlineCode checks what the CSP would otherwise break: every script is
// either an asset file or the JSON config block, no inline handlers or styles.
func TestNoInlineCode(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	for _, p := range []string{"/demo", "/diag"} {
		body := get(t, h, "GET", p, nil).Body.String()
		scripts := scriptRE.FindAllStringSubmatch(body, -1)
		if len(scripts) < 2 {
			t.Errorf("%s: %d scripts", p, len(scripts))
		}
		for _, s := range scripts {
			attrs, code := s[1], strings.TrimSpace(s[2])
			switch {
			case strings.Contains(attrs, `type="application/json"`):
			case strings.Contains(attrs, `src="assets/`) && code == "":
			default:
				t.Errorf("%s: inline script %q", p, s[0])
			}
		}
		if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|<style|javascript:`).FindString(body); m != "" {
			t.Errorf("%s: inline handler or style %q", p, m)
		}
		// Every asset the page names exists.
		for _, m := range regexp.MustCompile(`(?:src|href)="assets/([^"?]+)`).FindAllStringSubmatch(body, -1) {
			if _, ok := assets[m[1]]; !ok {
				t.Errorf("%s: names missing asset %q", p, m[1])
			}
		}
	}
}

// TestElementIDs pins the ids the browser tests use, and checks that every id a
// page script looks up exists in its page.
func TestElementIDs(t *testing.T) {
	h := Pages{Path: "/", Key: "peerjs"}.Handler()
	want := map[string][]string{
		"demo": {"my-id", "connect", "peer-id", "call", "relay-only", "status", "path", "chat-input", "chat-send", "chat-log", "config"},
		"diag": {"results", "verdict", "run", "config"},
	}
	idRE := regexp.MustCompile(`\sid="([^"]+)"`)
	lookupRE := regexp.MustCompile(`\$\('([^']+)'\)`)
	for page, ids := range want {
		body := get(t, h, "GET", "/"+page, nil).Body.String()
		have := map[string]int{}
		for _, m := range idRE.FindAllStringSubmatch(body, -1) {
			have[m[1]]++
		}
		for id, n := range have {
			if n > 1 {
				t.Errorf("%s: id %q used %d times", page, id, n)
			}
		}
		for _, id := range ids {
			if have[id] == 0 {
				t.Errorf("%s: no element #%s", page, id)
			}
		}
		for _, m := range lookupRE.FindAllStringSubmatch(string(assets[page+".js"].body), -1) {
			if have[m[1]] == 0 {
				t.Errorf("%s.js looks up #%s, which %s lacks", page, m[1], page)
			}
		}
	}
}

// node returns the path of node, or skips (fails under CI=true) when it is missing.
func node(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		skipnote.Skip(t, "node not found (it checks the page scripts)", "apt-get install nodejs")
	}
	return p
}

func TestJSSyntax(t *testing.T) {
	bin := node(t)
	names, err := filepath.Glob("assets/*.js")
	if err != nil || len(names) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	names = append(names, "testdata/peerproto_check.js")
	for _, name := range names {
		if out, err := exec.Command(bin, "--check", name).CombinedOutput(); err != nil {
			t.Errorf("node --check %s: %v\n%s", name, err, out)
		}
	}
}

// TestPeerprotoInNode runs the shared client against a fake WebSocket and fetch
// and checks the URLs it uses and the messages it sends.
func TestPeerprotoInNode(t *testing.T) {
	bin := node(t)
	out, err := exec.Command(bin, "testdata/peerproto_check.js", "assets/peerproto.js").CombinedOutput()
	if err != nil {
		t.Fatalf("peerproto_check.js: %v\n%s", err, out)
	}
}
