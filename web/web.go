// Package web owns the embedded browser pages (demo, diagnostics) and the small
// PeerJS-protocol client script they share. It must not speak TURN or hold
// credentials: the pages fetch them from the ICE endpoint.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets pages
var files embed.FS

// Pages serves the embedded pages. Path is the signaling path prefix (starts and ends with "/"), Key the PeerJS key.
type Pages struct{ Path, Key string }

// Header values sent with every HTML page. Scripts and styles come only from this
// origin's asset files (no inline code); the page talks to its own origin over
// fetch and WebSocket.
const (
	contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
		"connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; " +
		"form-action 'none'; frame-ancestors 'none'"
	assetCacheControl = "public, max-age=300"
)

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets holds every file under assets/, by file name, and version the short hash
// of them all that the pages append to asset URLs (?v=) so a new build is fetched
// at once despite Cache-Control.
var assets, version = loadAssets()

// templates are the pages, parsed once.
var templates = template.Must(template.ParseFS(files, "pages/*.html"))

func loadAssets() (map[string]asset, string) {
	m := map[string]asset{}
	all := sha256.New()
	err := fs.WalkDir(files, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		all.Write([]byte(name))
		all.Write(sum[:])
		m[strings.TrimPrefix(name, "assets/")] = asset{
			body:        body,
			contentType: contentType(name),
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("web: reading embedded assets: " + err.Error())
	}
	return m, hex.EncodeToString(all.Sum(nil)[:6])
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// pageConfig is what the scripts learn from the page's JSON config block.
type pageConfig struct {
	Path string `json:"path"`
	Key  string `json:"key"`
}

// pageData is the data of the page templates.
type pageData struct {
	Path, Key string
	Version   string     // asset version, for ?v=
	Config    pageConfig // rendered as JSON by html/template (script of type application/json)
}

// Handler returns a handler for these routes (relative to the server root, i.e. the full path):
//
//	GET {Path}demo        the demo page (HTML)
//	GET {Path}diag        the diagnostics page (HTML)
//	GET {Path}assets/...  the shared JS/CSS (e.g. {Path}assets/peerproto.js), with correct Content-Type and a short Cache-Control
//
// Anything else under these names → 404. HEAD is answered like GET; other methods get 405.
// An empty Path means "/", a Path without its leading or trailing "/" gets it added, and an
// empty Key means "peerjs" (the PeerJS defaults).
func (p Pages) Handler() http.Handler {
	p.Path = normalizePath(p.Path)
	if p.Key == "" {
		p.Key = "peerjs"
	}
	data := pageData{Path: p.Path, Key: p.Key, Version: version, Config: pageConfig{Path: p.Path, Key: p.Key}}
	h := &handler{path: p.Path, pages: map[string][]byte{}}
	for _, name := range []string{"demo", "diag"} {
		var b bytes.Buffer
		if err := templates.ExecuteTemplate(&b, name+".html", data); err != nil {
			// The templates are embedded and the data is two strings: this is a bug.
			panic("web: rendering " + name + ": " + err.Error())
		}
		h.pages[name] = b.Bytes()
	}
	return h
}

type handler struct {
	path  string            // normalised prefix
	pages map[string][]byte // rendered pages by route name
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, h.path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	var serve func()
	if page, ok := h.pages[rest]; ok {
		serve = func() { servePage(w, r, page) }
	} else if name, ok := strings.CutPrefix(rest, "assets/"); ok {
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		serve = func() { serveAsset(w, r, a) }
	} else {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	serve()
}

func servePage(w http.ResponseWriter, r *http.Request, page []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(page))
}

func serveAsset(w http.ResponseWriter, r *http.Request, a asset) {
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Cache-Control", assetCacheControl)
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// normalizePath makes p start and end with "/" ("" becomes "/").
func normalizePath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}
