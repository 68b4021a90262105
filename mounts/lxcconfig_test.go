package mounts

import (
	"slices"
	"testing"
)

// TestParseConfigLine covers the forms liblxc's parse_line accepts, and the
// lines it skips.
func TestParseConfigLine(t *testing.T) {
	tests := []struct {
		line, key, value string
		ok               bool
	}{
		{"lxc.net.0.type = none", "lxc.net.0.type", "none", true},
		{"lxc.net.0.type=none", "lxc.net.0.type", "none", true},
		{"  \tlxc.init.cmd\t =  /usr/bin/node /opt/app/server.js  \n", "lxc.init.cmd", "/usr/bin/node /opt/app/server.js", true},
		{"lxc.init.cmd = \"/sbin/tini -- node s.js\"", "lxc.init.cmd", "/sbin/tini -- node s.js", true},
		{"lxc.signal.halt = 'SIGTERM'\r\n", "lxc.signal.halt", "SIGTERM", true},
		{"lxc.init.cmd = \"unmatched'", "lxc.init.cmd", "\"unmatched'", true},
		{`lxc.init.cmd = "`, "lxc.init.cmd", `"`, true},
		{"lxc.environment = PORT=3000", "lxc.environment", "PORT=3000", true},
		{"lxc.net =", "lxc.net", "", true},
		{"lxc.mount.entry = /a\\040b opt/app none bind,ro 0 0", "lxc.mount.entry", "/a\\040b opt/app none bind,ro 0 0", true},
		{"LXC.Start.Auto = 1", "LXC.Start.Auto", "1", true},
		{"# lxc.start.auto = 1", "", "", false},
		{"   # indented comment", "", "", false},
		{"", "", "", false},
		{" \t\n", "", "", false},
		{"no equals sign", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			k, v, ok := ParseConfigLine(tt.line)
			if k != tt.key || v != tt.value || ok != tt.ok {
				t.Errorf("got %q, %q, %v, want %q, %q, %v", k, v, ok, tt.key, tt.value, tt.ok)
			}
		})
	}
}

const sampleConfig = `# Template used to create this container
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
  lxc.mount.auto = proc sys
lxc.mount.entry = /usr/bin/node usr/bin/node none bind,ro,create=file 0 0
lxc.signal.halt = SIGUSR1

lxc.start.auto=1
lxc.mount.auto = cgroup:mixed
lxc.signal.halt = "SIGTERM"`

func TestConfigItems(t *testing.T) {
	if got, want := ConfigValues([]byte(sampleConfig), "lxc.mount.auto"), []string{"proc sys", "cgroup:mixed"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := LastConfigValue([]byte(sampleConfig), "lxc.signal.halt"), "SIGTERM"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := LastConfigValue([]byte(sampleConfig), "lxc.init.cmd"); got != "" {
		t.Errorf("got %q, want %q", got, "")
	}
	var keys []string
	for k := range ConfigItems([]byte(sampleConfig)) {
		keys = append(keys, k)
		if len(keys) == 2 {
			break
		}
	}
	if want := []string{"lxc.net.0.type", "lxc.net.0.link"}; !slices.Equal(keys, want) {
		t.Errorf("got %q, want %q", keys, want)
	}
}

func TestEditConfig(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"drop keys by prefix", DropConfigKeys([]byte(sampleConfig), "lxc.net.", "lxc.signal.halt"), `# Template used to create this container
  lxc.mount.auto = proc sys
lxc.mount.entry = /usr/bin/node usr/bin/node none bind,ro,create=file 0 0

lxc.start.auto=1
lxc.mount.auto = cgroup:mixed
`},
		{"drop by entry target", DropConfig([]byte(sampleConfig), func(k, v string) bool {
			return k == "lxc.mount.entry" && EntryTarget(v) == "usr/bin/node"
		}), `# Template used to create this container
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
  lxc.mount.auto = proc sys
lxc.signal.halt = SIGUSR1

lxc.start.auto=1
lxc.mount.auto = cgroup:mixed
lxc.signal.halt = "SIGTERM"`},
		{"replace in place", EditConfig([]byte("a = 1\nlxc.start.auto = 1\nb = 2\n"), func(k, v, line string) string {
			if k == "lxc.start.auto" {
				return "lxc.start.auto = 0\n"
			}
			return line
		}), "a = 1\nlxc.start.auto = 0\nb = 2\n"},
		{"append after a last line without newline", AppendConfig([]byte("a = 1"), "b = 2", "c = 3"), "a = 1\nb = 2\nc = 3\n"},
		{"append to nothing", AppendConfig(nil, "b = 2"), "b = 2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if string(tt.got) != tt.want {
				t.Errorf("got\n%q\nwant\n%q", tt.got, tt.want)
			}
		})
	}
}

func TestEntryTarget(t *testing.T) {
	tests := []struct{ value, want string }{
		{"/usr/bin/node usr/bin/node none bind,ro,create=file 0 0", "usr/bin/node"},
		{"/usr/bin/node /usr/bin/node/ none bind 0 0", "usr/bin/node"},
		{"/x opt/my\\040app none bind 0 0", "opt/my app"},
		{"/x", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := EntryTarget(tt.value); got != tt.want {
			t.Errorf("EntryTarget(%q): got %q, want %q", tt.value, got, tt.want)
		}
	}
}
