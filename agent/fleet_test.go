package agent

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/fleet"
)

func TestFleetConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ngroup = \"web\"\nhost_id = \"box-1\"\nttl = \"10s\"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	fc := c.AgentConfig().Fleet
	if !fc.Enabled() || fc.Group != "web" || fc.HostID != "box-1" || fc.TTL != 10*time.Second {
		t.Errorf("fleet config: got %+v", fc)
	}
	if c, _ := LoadConfig(write(""), true); c.AgentConfig().Fleet.Enabled() {
		t.Errorf("no [fleet]: want the fleet off")
	}
	for _, bad := range []struct{ body, key string }{
		{"[fleet]\nendpoints = [\"127.0.0.1:2379\"]\n", "fleet.endpoints"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ngroup = \"a/b\"\n", "fleet.group"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nttl = \"100ms\"\n", "fleet.ttl"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ncert = \"/x\"\n", "fleet.cert"},
		{"[fleet]\nendpoint = [\"http://127.0.0.1:2379\"]\n", "fleet.endpoint"},
	} {
		if _, err := LoadConfig(write(bad.body), true); err == nil || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("config %q: got %v, want an error naming %s", bad.body, err, bad.key)
		}
	}
}

// TestFleetOffAndUnreachable: an agent without [fleet] says so on
// /v1/fleet and 404s the fleet's routes; an agent whose etcd does not
// answer starts, serves, and says that etcd is unreachable.
func TestFleetOffAndUnreachable(t *testing.T) {
	off := serveAgent(t, Config{}, Deps{Containers: emptyHost(t)})
	var st map[string]any
	if code := getJSON(t, off.unix, "/v1/fleet", &st); code != 200 || st["enabled"] != false {
		t.Errorf("GET /v1/fleet without [fleet]: %d %v", code, st)
	}
	if code := getJSON(t, off.unix, "/v1/fleet/hosts", &st); code != 404 {
		t.Errorf("GET /v1/fleet/hosts without [fleet]: %d, want 404", code)
	}
	// A loopback port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	on := serveAgent(t, Config{Fleet: fleet.Config{Endpoints: []string{"http://" + addr}, HostID: "h1", TTL: 2 * time.Second}}, Deps{Containers: emptyHost(t)})
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s fleet.Status
		code := getJSON(t, on.unix, "/v1/fleet", &s)
		if code == 200 && !s.Connected && s.Error != "" && strings.Contains(s.Note, "etcd unreachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/fleet with etcd down: %d %+v; want connected=false naming the error", code, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := getJSON(t, on.unix, "/v1/fleet/hosts", &st); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/fleet/hosts with etcd down: %d, want 503", code)
	}
}

func getJSON(t *testing.T, cl *http.Client, path string, out any) int {
	t.Helper()
	resp, err := cl.Get("http://agent" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}
