package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecodeRequest: no body makes DecodeRequest or the validation panic;
// every refusal is an InvalidError (a 400, never a 500); and an accepted
// request survives a JSON round trip unchanged.
// Run: go test -fuzz FuzzDecodeRequest ./agent/ (seeds in testdata/fuzz).
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"kind":"stop-all"}`, `{"names":["locker-001"],"stop_timeout":"5s"}`,
		`{"kind":"update-code","strategy":"rolling","canary":2,"soak":"30s","max_failure_ratio":0.25,"failure_action":"pause"}`,
		`{"bogus":true}`, `{"window":-1}`, `[]`, `{} {}`, `{"stop_timeout":10}`, `{"names":["../x"]}`, "{\"target\":\"a\\u0000b\"}",
	} {
		f.Add([]byte(s))
	}
	d := DefaultDefaults()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(bytes.NewReader(body))
		var inv InvalidError
		if err != nil {
			if !errors.As(err, &inv) || inv.Msg == "" {
				t.Fatalf("DecodeRequest(%q): error %v (%T) is not an InvalidError with a message", body, err, err)
			}
			return
		}
		if len(body) > maxBodyBytes {
			t.Fatalf("DecodeRequest accepted a %d-byte body", len(body))
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshalling an accepted request: %v", err)
		}
		again, err := DecodeRequest(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		b2, _ := json.Marshal(again)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the request: %s -> %s", b, b2)
		}
		if req.Kind == "" {
			req.Kind = KindStopAll
		}
		full, err := req.withDefaults(d)
		if err != nil {
			if !errors.As(err, &inv) {
				t.Fatalf("withDefaults: %v (%T) is not an InvalidError", err, err)
			}
			return
		}
		for _, n := range full.Names {
			checkSafeName(t, n)
		}
		if p := full.pol; p.MaxUnavailable <= 0 || p.StopParallel < 0 || p.Deadline <= 0 || p.StopTimeout <= 0 {
			t.Fatalf("accepted request with a non-positive bound: %+v", full)
		}
	})
}

// FuzzValidateName: a name the agent accepts (in a request body or a URL
// path) is a safe LXC container name; any other gets a 4xx, never a 5xx.
// (Only pure code runs here: liblxc under the fuzzer's workers stalls.)
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"locker-001", "a", "", ".", "..", "../etc", "-rf", "a/b", "a b", "ä", strings.Repeat("x", 65), "x\x00y", "web.1_2"} {
		f.Add(s)
	}
	a, err := New(Config{StateDir: f.TempDir()}, Deps{Containers: emptyHost(f), Logger: discardLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	h := a.Handler()
	f.Fuzz(func(t *testing.T, name string) {
		_, err := Request{Kind: KindStopAll, Names: []string{name}}.withDefaults(DefaultDefaults())
		if err == nil {
			checkSafeName(t, name)
		} else if !errors.As(err, new(InvalidError)) {
			t.Fatalf("name %q: error %v is not an InvalidError", name, err)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/containers/x", nil)
		req.URL.Path = "/v1/containers/" + name
		req.URL.RawPath = "/v1/containers/" + url.PathEscape(name)
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("GET /v1/containers/%q: %d %s", name, rec.Code, rec.Body)
		}
		// The same name in a JSON body decodes and validates alike.
		body, _ := json.Marshal(Request{Kind: KindStopAll, Names: []string{name}})
		dreq, derr := DecodeRequest(bytes.NewReader(body))
		if derr != nil {
			t.Fatalf("decoding %s: %v", body, derr)
		}
		if _, verr := dreq.withDefaults(DefaultDefaults()); (verr == nil) != (err == nil) && dreq.Names[0] == name {
			t.Fatalf("name %q: validation of the decoded body says %v, directly %v", name, verr, err)
		}
	})
}

func checkSafeName(t *testing.T, n string) {
	t.Helper()
	if n == "" || len(n) > 64 || n == "." || n == ".." || strings.ContainsAny(n, "/\x00 \n") || strings.HasPrefix(n, "-") || strings.HasPrefix(n, ".") {
		t.Fatalf("accepted unsafe container name %q", n)
	}
}
