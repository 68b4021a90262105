package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoadGetConditional: the API load names the last answer's entity tag,
// as the console does, and counts the 304s as answered; with full, it
// never names one. A real HTTP server on loopback.
func TestLoadGetConditional(t *testing.T) {
	var named, whole atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"g1"`)
		if r.Header.Get("If-None-Match") == `"g1"` {
			named.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		whole.Add(1)
		_, _ = w.Write([]byte(`{"containers": []}`))
	}))
	defer srv.Close()
	for _, full := range []bool{false, true} {
		named.Store(0)
		whole.Store(0)
		ld := loadGet(context.Background(), srv.Client(), srv.URL, 100, 300*time.Millisecond, full)
		n := len(ld.lat) + ld.errs
		if ld.errs != 0 || n < 10 {
			t.Fatalf("full=%v: %d requests, %d errors; want at least 10 and none", full, n, ld.errs)
		}
		if int64(ld.notModified) != named.Load() || int64(n) != named.Load()+whole.Load() {
			t.Errorf("full=%v: counted %d 304s of %d, the server sent %d 304s and %d lists", full, ld.notModified, n, named.Load(), whole.Load())
		}
		if full && named.Load() != 0 {
			t.Errorf("full: %d requests named an ETag, want none", named.Load())
		}
		if !full && named.Load() < int64(n)/2 {
			t.Errorf("conditional: %d of %d requests named the ETag, want most", named.Load(), n)
		}
	}
}
