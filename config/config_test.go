package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/config"
	"lxcfleet/rollout"
)

const goodToken = "dGhpcyBpcyBhIDMyIGJ5dGUgdG9rZW4gZm9yIHRlc3RzIQ=="

func TestFleetConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := config.Load(write("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ngroup = \"web\"\nhost_id = \"box-1\"\nttl = \"10s\"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	fc := c.AgentConfig().Fleet
	if !fc.Enabled() || fc.Group != "web" || fc.HostID != "box-1" || fc.TTL != 10*time.Second {
		t.Errorf("fleet config: got %+v", fc)
	}
	if c, _ := config.Load(write(""), true); c.AgentConfig().Fleet.Enabled() {
		t.Errorf("no [fleet]: want the fleet off")
	}
	for _, bad := range []struct{ body, key string }{
		{"[fleet]\nendpoints = [\"127.0.0.1:2379\"]\n", "fleet.endpoints"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ngroup = \"a/b\"\n", "fleet.group"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nttl = \"100ms\"\n", "fleet.ttl"},
		{"[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\ncert = \"/x\"\n", "fleet.cert"},
		{"[fleet]\nendpoint = [\"http://127.0.0.1:2379\"]\n", "fleet.endpoint"},
	} {
		if _, err := config.Load(write(bad.body), true); err == nil || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("config %q: got %v, want an error naming %s", bad.body, err, bad.key)
		}
	}
}

// TestLoadRefusesExposedSecrets: token files, TLS keys and configs
// holding a token that group or others may read are refused, and so are
// short tokens, with a message saying how to make a good one.
func TestLoadRefusesExposedSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", goodToken+"\n", 0o600)
	open := write("open", goodToken+"\n", 0o644)
	group := write("group", goodToken+"\n", 0o640)
	short := write("short", "x\n", 0o600)
	keyOpen := write("key-open.pem", "k", 0o644)
	keyGood := write("key.pem", "k", 0o600)
	tests := []struct {
		name string
		body string
		mode os.FileMode
		want string // "" = accepted
	}{
		{"token file 0600", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\n", good), 0o644, ""},
		{"world-readable token file", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\n", open), 0o644, "chmod 600 " + open},
		{"group-readable token file", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\n", group), 0o644, "mode 0640"},
		{"one-byte token", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\n", short), 0o644, "head -c 32 /dev/urandom"},
		{"inline token in a readable config", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken = %q\n", goodToken), 0o644, "holds listen.token"},
		{"inline token in a 0600 config", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken = %q\n", goodToken), 0o600, ""},
		{"short inline token", "[listen]\ntcp = \"127.0.0.1:0\"\ntoken = \"abc\"\n", 0o600, "at least 32"},
		{"world-readable TLS key", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\ntls_cert = %q\ntls_key = %q\n", good, keyOpen, keyOpen), 0o644, "listen.tls_key"},
		{"TLS key 0600", fmt.Sprintf("[listen]\ntcp = \"127.0.0.1:0\"\ntoken_file = %q\ntls_cert = %q\ntls_key = %q\n", good, keyGood, keyGood), 0o644, ""},
		{"duration as a number", "[listen]\nidle_timeout = 30\n", 0o644, "idle_timeout"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := write(fmt.Sprintf("c%d.toml", i), tc.body, tc.mode)
			_, err := config.Load(cfg, true)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want it accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestDefaultsSection: [defaults] takes every knob by its one name (pace
// as a table too), names the key of a bad value, and refuses values that
// cannot mean anything.
func TestDefaultsSection(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range []struct{ body, want string }{
		{"[defaults]\npace = {memory = 0.2, io = 0.5, slow_factor = 4}\n", ""},
		{"[defaults.pace]\nmemory = 0.3\n", ""},
		{"[defaults]\npace = {memroy = 0.2}\n", "memroy"},
		{"[defaults]\nstop_timeout = \"abc\"\n", "stop_timeout"},
		{"[defaults]\ndeadline = \"\"\n", "deadline"},
		{"[defaults]\nmax_failure_ratio = nan\n", "max_failure_ratio must be a finite number"},
		{"[defaults]\nmax_failure_ratio = inf\n", "max_failure_ratio must be a finite number"},
		{"[defaults]\npacing = \"\"\n", "pacing is empty"},
		{"[defaults]\nhealth = \"\"\n", "health is empty"},
		{"[defaults]\nwindow = 3\n", ""},
	} {
		p := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(p, true)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: got %v, want it loaded", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want an error naming %q", tc.body, err, tc.want)
		}
		if i == 0 && err == nil {
			if pace := c.AgentDefaults().Policy.Pace; pace.Memory != 0.2 || pace.IO != 0.5 || pace.SlowFactor != 4 {
				t.Errorf("pace from [defaults]: %+v", pace)
			}
		}
	}
}

// TestSleepSection: a bad [sleep] names its key and value; an idle_stop
// below config.MinIdleStop, or without held sockets to wake on, is
// refused (exit 2 from every command); "0s" and a sane held one load.
func TestSleepSection(t *testing.T) {
	held := "[provision]\nsocket = \"held\"\n"
	tests := []struct {
		name, body, want string // want "" = accepted
	}{
		{"negative idle_stop", held + "[sleep]\nidle_stop = \"-5s\"\n", `sleep.idle_stop = "-5s" must not be negative`},
		{"negative sample", held + "[sleep]\nidle_stop = \"1m\"\nsample = \"-1s\"\n", `sleep.sample = "-1s" must not be negative`},
		{"idle_stop below the floor", held + "[sleep]\nidle_stop = \"1ms\"\n", `sleep.idle_stop = "1ms" is below 10s`},
		{"idle_stop without held sockets", "[provision]\nsocket = \"app\"\n[sleep]\nidle_stop = \"30m\"\n", `sleep.idle_stop = "30m0s" needs held sockets`},
		{"idle_stop with the default socket", "[sleep]\nidle_stop = \"30m\"\n", "needs held sockets"},
		{"awake", "[sleep]\nidle_stop = \"0s\"\n", ""},
		{"held and 30m", held + "[sleep]\nidle_stop = \"30m\"\n", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), fmt.Sprintf("c%d.toml", i))
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := config.Load(p, true)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want it accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestHeldDefaults: held sockets make the built-in K 1 and W 4
// (config.HeldMaxUnavailable) unless [defaults] names K (or its old name
// window); a max_starting of its own is kept; today's sockets keep K 4.
func TestHeldDefaults(t *testing.T) {
	held := "[provision]\nsocket = \"held\"\n"
	for _, tc := range []struct {
		name, body string
		k, w       int
		implied    bool // W is the held default's, not the operator's
	}{
		{"held", held, config.HeldMaxUnavailable, rollout.DefaultPolicy().MaxUnavailable, true},
		{"held, K set", held + "[defaults]\nmax_unavailable = 3\n", 3, 0, false},
		{"held, K by its old name", held + "[defaults]\nwindow = 2\n", 2, 0, false},
		{"held, W set", held + "[defaults]\nmax_starting = 2\n", config.HeldMaxUnavailable, 2, false},
		{"app", "[provision]\nsocket = \"app\"\n", rollout.DefaultPolicy().MaxUnavailable, 0, false},
		{"no file's word", "", rollout.DefaultPolicy().MaxUnavailable, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(p, true)
			if err != nil {
				t.Fatal(err)
			}
			d := c.AgentDefaults()
			if pol := d.Policy; pol.MaxUnavailable != tc.k || pol.MaxStarting != tc.w || d.ImpliedMaxStarting != tc.implied {
				t.Errorf("K %d, W %d, implied %v; want K %d, W %d, implied %v", pol.MaxUnavailable, pol.MaxStarting, d.ImpliedMaxStarting, tc.k, tc.w, tc.implied)
			}
		})
	}
}
