package agent

import (
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
