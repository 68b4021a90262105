package agent

import (
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
	"maps"
	"strings"
	"testing"
)

func TestReleasesInUse(t *testing.T) {
	tests := []struct {
		name    string
		lockers []Locker
		want    map[string]int
		wantErr string
	}{
		{"none", nil, map[string]int{}, ""},
		{"counts running lockers per release", []Locker{
			{Name: "a", Release: "000001-aaaa"}, {Name: "b", Release: "000002-bbbb"},
			{Name: "c", Release: "000001-aaaa"}, {Name: "stopped"},
		}, map[string]int{"000001-aaaa": 2, "000002-bbbb": 1}, ""},
		{"a deleted release still counts", []Locker{
			{Name: "a", Release: "000001-aaaa", ReleaseDeleted: true},
		}, map[string]int{"000001-aaaa": 1}, ""},
		{"an unknown release is an error naming the locker", []Locker{
			{Name: "a", Release: "000001-aaaa"}, {Name: "odd", ReleaseError: "app mount is not a release"},
		}, map[string]int{"000001-aaaa": 1}, `container "odd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReleasesInUse(tt.lockers)
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestPruneKeepsTheReleasesInUse: an update's prune gets the releases the
// lockers run from a fresh read of them (the agent here runs no background
// refresh), through ReleasesInUse.
func TestPruneKeepsTheReleasesInUse(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), KeepReleases: 1, Defaults: DefaultDefaults()}, discardLogger())
	j, err := a.Submit(Request{Kind: KindUpdate, Target: "r2", Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s"}})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = a.Wait(t.Context(), j.ID); err != nil || j.State != JobSucceeded {
		t.Fatalf("update: %s %q %v, want succeeded", j.State, j.Error, err)
	}
	pruned := code.Pruned()
	if len(pruned) != 1 {
		t.Fatalf("got %d prunes, want 1", len(pruned))
	}
	if want := map[string]int{"r2": len(names)}; !maps.Equal(pruned[0], want) {
		t.Errorf("prune's releases in use: got %v, want %v", pruned[0], want)
	}
}
