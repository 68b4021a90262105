package mounts

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" means valid
	}{
		{"locker-01", ""},
		{"a", ""},
		{"A.b_c-9", ""},
		{strings.Repeat("x", 64), ""},
		{"", "empty"},
		{strings.Repeat("x", 65), "65 bytes long, at most 64"},
		{".", "not a folder name"},
		{"..", "not a folder name"},
		{".hidden", `must not start with '.'`},
		{"-rf", `must not start with '-'`},
		{"a/b", "contains a slash"},
		{"../etc", "must not start with '.'"},
		{"a\x00b", "contains a NUL byte"},
		{"a b", "contains white space ' '"},
		{"a\tb", `contains white space '\t'`},
		{"a\nb", `contains white space '\n'`},
		{"a\x7fb", "contains control character"},
		{"a\x01b", "contains control character"},
		{"a:b", `character ':' not allowed`},
		{"lock€r", `character '€' not allowed`},
		{"a\xffb", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			case tt.wantErr != "" && tt.name != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.name)):
				t.Errorf("got %v, want the error to name %q", err, tt.name)
			}
		})
	}
}
