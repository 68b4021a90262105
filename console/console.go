package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"lxcfleet/downtime"
)

//go:embed static
var static embed.FS

// Options tunes the console's handler.
type Options struct {
	// Until, when set, says when the running maintenance is expected to
	// end, for the page at /maintenance (e.g. (*agent.Agent).MaintenanceUntil);
	// zero means unknown.
	Until func() time.Time
}

// Handler returns the console: the page at /, its assets under /assets/
// and the maintenance page at /maintenance. None of it needs the token;
// the API the page calls does.
func Handler() http.Handler { return New(Options{}) }

// New returns the console's handler with opts.
func New(opts Options) http.Handler {
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	index, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	fileServer := http.FileServerFS(assets)
	mux.Handle("GET /assets/", http.StripPrefix("/assets", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if path.Ext(r.URL.Path) == "" || strings.HasSuffix(r.URL.Path, ".html") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write(index)
	})
	mux.HandleFunc("/maintenance", func(w http.ResponseWriter, r *http.Request) {
		p := downtime.PageInfo{}
		if opts.Until != nil {
			p.Until = opts.Until()
		}
		downtime.ServePage(w, r, p)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found: the console is at /", http.StatusNotFound)
	})
	return secure(mux)
}

// secure adds the headers that keep the page to itself: no framing, no
// scripts or connections but its own.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/maintenance" { // a page of its own, inline style
			h.ServeHTTP(w, r)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}
