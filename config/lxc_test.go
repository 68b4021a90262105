package config_test

import (
	"lxcfleet/config"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadRefusesWhatLXCWouldRefuse: a provision value LXC's parser
// refuses (it would make containers no command can load) is a config
// error naming the key and the value.
func TestLoadRefusesWhatLXCWouldRefuse(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"[provision]\nhalt_signal = \"SIGFOO\"\n", `provision.halt_signal: halt signal "SIGFOO"`},
		{"[provision]\nhalt_signal = \"99\"\n", "no such signal"},
		{"[provision]\nnetwork = \"bridge\"\n", `provision.network "bridge"`},
		{"[provision]\nextra_config = [\"lxc.tty.maxx = 5\"]\n", "provision.extra_config[0]"},
		{"[provision]\nhalt_signal = \"SIGPWR\"\nextra_config = [\"lxc.start.order = 3\"]\n", ""},
	} {
		p := filepath.Join(t.TempDir(), "lxcfleet.toml")
		if err := os.WriteFile(p, []byte("state_dir = \"/tmp/x\"\n"+tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(p, true)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: got %v, want it loaded", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}
