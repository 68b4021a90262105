package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config")
	for _, tc := range []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"creates", "one\n", 0o640},
		{"replaces", "two\n", 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteFile(p, []byte(tc.data), tc.perm); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tc.data {
				t.Errorf("content: got %q %v, want %q", got, err, tc.data)
			}
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != tc.perm {
				t.Errorf("mode: got %v %v, want %v", fi.Mode().Perm(), err, tc.perm)
			}
			left, _ := filepath.Glob(filepath.Join(dir, ".config.tmp-*"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Errorf("writing into a missing folder: got nil, want an error")
	}
}
