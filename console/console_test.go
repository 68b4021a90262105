package console_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lxcfleet/console"
)

func TestHandler(t *testing.T) {
	until := time.Now().Add(3 * time.Minute)
	h := console.New(console.Options{Until: func() time.Time { return until }})
	tests := []struct {
		path     string
		wantCode int
		wantType string
		wantBody string
	}{
		{"/", 200, "text/html", `<form id="login-form"`},
		{"/assets/app.js", 200, "javascript", "Authorization: 'Bearer '"},
		{"/assets/app.css", 200, "text/css", ".tile"},
		{"/assets/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"/assets/index.html", 404, "", ""},
		{"/assets/", 404, "", ""},
		{"/maintenance", 503, "text/html", until.UTC().Format(time.RFC3339)},
		{"/nope", 404, "", "the console is at /"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			if rec.Code != tt.wantCode {
				t.Fatalf("status: got %d, want %d", rec.Code, tt.wantCode)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, tt.wantType) {
				t.Errorf("Content-Type: got %q, want %q", ct, tt.wantType)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body lacks %q", tt.wantBody)
			}
			if tt.path != "/maintenance" && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") {
				t.Errorf("no Content-Security-Policy on %s", tt.path)
			}
			if tt.path == "/maintenance" && rec.Header().Get("Retry-After") == "" {
				t.Error("maintenance page without Retry-After")
			}
		})
	}
	// The console with no options: an unknown end.
	rec := httptest.NewRecorder()
	console.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/maintenance", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "30" {
		t.Errorf("Handler() /maintenance: got %d Retry-After %q, want 503 and 30", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestNothingFromOutside: everything the page loads ships in the binary.
func TestNothingFromOutside(t *testing.T) {
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import|fetch\(\s*["']https?:`)
	err := filepath.WalkDir("static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if m := ext.Find(b); m != nil {
			t.Errorf("%s loads something from outside the binary: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
