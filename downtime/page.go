package downtime

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed page.html
var pageHTML string

var pageTmpl = template.Must(template.New("page").Parse(pageHTML))

// DefaultRetryAfter is the Retry-After sent when the end is unknown.
const DefaultRetryAfter = 30 * time.Second

// PageInfo is what the maintenance page says.
type PageInfo struct {
	// Until is the expected end of the maintenance; zero when unknown.
	Until time.Time
	// Title is the page's heading; default "Down for maintenance".
	Title string
	// Message is a line under the heading; default "We are updating this
	// service. It will be back shortly."
	Message string
}

// retryAfter is the Retry-After in whole seconds: until the expected end,
// rounded up (a client retrying early finds the page again), at least 1s;
// DefaultRetryAfter when the end is unknown or past.
func (p PageInfo) retryAfter(now time.Time) int {
	if p.Until.IsZero() || !p.Until.After(now) {
		return int(DefaultRetryAfter / time.Second)
	}
	return max(1, int((p.Until.Sub(now)+time.Second-1)/time.Second))
}

// Page returns the maintenance page handler. info is called per request
// (nil: an unknown end). Every method gets the 503; HEAD gets no body, a
// client that asks for JSON gets {"error", "until", "retry_after"}.
func Page(info func() PageInfo) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p PageInfo
		if info != nil {
			p = info()
		}
		ServePage(w, r, p)
	})
}

// ServePage writes the maintenance page for p.
func ServePage(w http.ResponseWriter, r *http.Request, p PageInfo) {
	now := time.Now()
	if p.Title == "" {
		p.Title = "Down for maintenance"
	}
	if p.Message == "" {
		p.Message = "We are updating this service. It will be back shortly."
	}
	ra := p.retryAfter(now)
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(ra))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Lxcfleet-Maintenance", "1")
	if strings.Contains(r.Header.Get("Accept"), "application/json") && !strings.Contains(r.Header.Get("Accept"), "text/html") {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		body := map[string]any{"error": p.Title, "message": p.Message, "retry_after": ra}
		if !p.Until.IsZero() {
			body["until"] = p.Until.UTC().Format(time.RFC3339)
		}
		if r.Method != http.MethodHead {
			_ = json.NewEncoder(w).Encode(body)
		}
		return
	}
	var buf bytes.Buffer
	data := map[string]any{
		"Title":      p.Title,
		"Message":    p.Message,
		"RetryAfter": ra,
		"Known":      !p.Until.IsZero() && p.Until.After(now),
		"UntilISO":   p.Until.UTC().Format(time.RFC3339),
		"UntilText":  p.Until.UTC().Format("15:04:05 MST"),
	}
	if err := pageTmpl.Execute(&buf, data); err != nil {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusServiceUnavailable)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}
