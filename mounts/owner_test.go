package mounts

import (
	"strings"
	"testing"
)

func TestOwnerFromIdmap(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    Owner
		wantErr string
	}{
		{"privileged", nil, Owner{}, ""},
		{"usual", []string{"u 0 100000 65536", "g 0 100000 65536"}, Owner{100000, 100000}, ""},
		{"different uid and gid", []string{"g 0 200000 65536", "u 0 300000 65536"}, Owner{300000, 200000}, ""},
		{"both", []string{"b 0 165536 65536"}, Owner{165536, 165536}, ""},
		{"full lines", []string{"lxc.idmap = u 0 100000 65536", "lxc.idmap=g 0 100000 65536"}, Owner{100000, 100000}, ""},
		{"split ranges", []string{"u 0 100000 1000", "u 1000 1000 1", "u 1001 101001 64535", "g 0 100000 65536"}, Owner{100000, 100000}, ""},
		{"root not mapped", []string{"u 1 100000 65535", "g 0 100000 65536"}, Owner{}, "does not map container uid 0"},
		{"gid missing", []string{"u 0 100000 65536"}, Owner{}, "does not map container gid 0"},
		{"three fields", []string{"u 0 100000"}, Owner{}, "want 4 fields"},
		{"bad type", []string{"x 0 100000 65536"}, Owner{}, `type "x"`},
		{"bad type on another range", []string{"x 5 100000 65536", "b 0 1 1"}, Owner{}, `type "x"`},
		{"negative", []string{"u 0 -1 65536"}, Owner{}, "is not an id"},
		{"empty range", []string{"u 0 100000 0"}, Owner{}, "empty range"},
		{"another key", []string{"lxc.uts.name = a"}, Owner{}, "not an lxc.idmap value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OwnerFromIdmap(tt.lines)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
