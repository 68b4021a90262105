package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestJobCommandsSurviveALostJournal: with an empty, a truncated or a
// garbled journal, `stop-all --local` and scripts/lxc-stop-all run, say
// the journal was set aside, and never print a Go stack trace.
func TestJobCommandsSurviveALostJournal(t *testing.T) {
	bin := lxcfleetBin(t)
	for _, c := range []string{"empty", "truncated", "garbled"} {
		for _, via := range []string{"--local", "lxc-stop-all"} {
			t.Run(c+" "+via, func(t *testing.T) {
				dir := t.TempDir()
				lxcpath := filepath.Join(dir, "lxc")
				state := filepath.Join(dir, "state")
				for _, d := range []string{lxcpath, state} {
					if err := os.MkdirAll(d, 0o700); err != nil {
						t.Fatal(err)
					}
				}
				cfg := filepath.Join(dir, "lxcfleet.toml")
				body := fmt.Sprintf("lxcpath = %q\nstate_dir = %q\n[listen]\nsocket = %q\n", lxcpath, state, filepath.Join(dir, "none.sock"))
				if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				// A real journal first (one run), then spoil it.
				if _, stderr, code := runCLI(t, "stop-all", "--local", "--config", cfg); code != 0 {
					t.Fatalf("first stop-all: exit %d: %s", code, stderr)
				}
				journal := filepath.Join(state, "journal.db")
				b, err := os.ReadFile(journal)
				if err != nil {
					t.Fatal(err)
				}
				switch c {
				case "empty":
					b = nil
				case "truncated":
					b = b[:len(b)/3]
				case "garbled":
					for i := 0; i < 8192 && i < len(b); i++ {
						b[i] ^= byte(i*7 + 1)
					}
				}
				if err := os.WriteFile(journal, b, 0o600); err != nil {
					t.Fatal(err)
				}
				var stderr string
				var code int
				if via == "--local" {
					_, stderr, code = runCLI(t, "stop-all", "--local", "--config", cfg)
				} else {
					cmd := exec.Command("../../scripts/lxc-stop-all", "--config", cfg)
					cmd.Env = append(os.Environ(), "LXCFLEET="+bin)
					out, err := cmd.CombinedOutput()
					stderr = string(out)
					if ee, ok := err.(*exec.ExitError); ok {
						code = ee.ExitCode()
					} else if err != nil {
						t.Fatal(err)
					}
				}
				if code != 0 {
					t.Errorf("exit code: got %d, want 0\n%s", code, stderr)
				}
				for _, bad := range []string{"panic", "goroutine ", ".go:"} {
					if strings.Contains(stderr, bad) {
						t.Errorf("output holds %q (a stack trace):\n%s", bad, stderr)
					}
				}
				if !strings.Contains(stderr, journal) || !strings.Contains(stderr, "could not be read") {
					t.Errorf("output: got\n%s\nwant a message naming %s", stderr, journal)
				}
				if aside, _ := filepath.Glob(journal + ".lost-*"); len(aside) != 1 {
					t.Errorf("journals set aside: got %v, want one", aside)
				}
			})
		}
	}
}
