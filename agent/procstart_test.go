package agent

import (
	"os/exec"
	"testing"
	"time"
)

// TestProcStartTime: a process started now is seen as started now (to the
// second, within the boot time's rounding); a gone one has no start time.
func TestProcStartTime(t *testing.T) {
	before := time.Now()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	got := procStartTime(cmd.Process.Pid)
	if got.Before(before.Add(-2*time.Second)) || got.After(time.Now().Add(2*time.Second)) {
		t.Errorf("got %v, want within 2s of %v", got, before)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if got := procStartTime(cmd.Process.Pid); !got.IsZero() {
		t.Errorf("gone process: got %v, want the zero time", got)
	}
}
