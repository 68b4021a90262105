package provision

import "testing"

// TestStartAuto: adopt warns about (and with --clear-start-auto clears) a
// config whose last lxc.start.auto is 1, in liblxc's forms, in place.
func TestStartAuto(t *testing.T) {
	tests := []struct {
		name, config string
		atBoot       bool
		cleared      string
	}{
		{"on", "lxc.uts.name = a\nlxc.start.auto = 1\nlxc.start.order = 3\n", true,
			"lxc.uts.name = a\nlxc.start.auto = 0\nlxc.start.order = 3\n"},
		{"blanks and quotes", "  lxc.start.auto=\"1\"\r\n", true, "lxc.start.auto = 0\r\n"},
		{"off", "lxc.start.auto = 0\n", false, "lxc.start.auto = 0\n"},
		{"a later 0 wins", "lxc.start.auto = 1\nlxc.start.auto = 0\n", false, "lxc.start.auto = 0\nlxc.start.auto = 0\n"},
		{"a comment", "# lxc.start.auto = 1\n", false, "# lxc.start.auto = 1\n"},
		{"last line without newline", "lxc.start.auto = 1", true, "lxc.start.auto = 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := startsAtBoot([]byte(tt.config)); got != tt.atBoot {
				t.Errorf("startsAtBoot: got %v, want %v", got, tt.atBoot)
			}
			if got := string(clearStartAuto([]byte(tt.config))); got != tt.cleared {
				t.Errorf("clearStartAuto: got %q, want %q", got, tt.cleared)
			}
		})
	}
}
