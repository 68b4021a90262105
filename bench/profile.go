package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// The benchmark app's profiles (Options.App).
const (
	// AppLight is issue 7's app: its dependencies, then WORK (40: about
	// 0.3 CPU s), about 30 MiB of its own memory from start to serving.
	AppLight = "light"
	// AppHeavy is issue 19's: before WORK it warms a 192 MiB cache and,
	// holding it, compiles and renders generated templates, then drops
	// both and collects (app/server.js, heavyStart), then WORK (400): a
	// start of at least 1 CPU s (measured: 0.87 s with WORK 130, 0.90 s with 200), a peak of about 260 MiB RSS, serving on the light
	// app's memory. A box that serves N of them cannot start N at once.
	AppHeavy = "heavy"
)

// MemPerLocker and MemStartRoom make the memory limit on the lockers'
// cgroup parent when Options.MemLimit is 0: N × MemPerLocker is room for
// every locker serving (about 30 MiB of its own and the kernel's for each,
// the node binary's pages once) and for about N/10 heavy starts on top;
// MemStartRoom is room for four heavy starts at once besides (the bench
// starts the fleet four at a time), whatever N. Not room for N heavy
// starts at once: 300 lockers get 17.1 GiB, their storm wants about 75.
const (
	MemPerLocker = 55 << 20
	MemStartRoom = 1 << 30
)

// appProfile is what a profile puts in every locker's environment, and
// its default startup work (thousands of sha256 rounds).
func appProfile(name string) (env []string, work int, err error) {
	switch name {
	case "", AppLight:
		return []string{"APP_PROFILE=" + AppLight}, 40, nil
	case AppHeavy:
		return []string{"APP_PROFILE=" + AppHeavy}, 400, nil
	}
	return nil, 0, fmt.Errorf("app profile %q: want %s or %s", name, AppLight, AppHeavy)
}

// memLimitFor is the memory limit a run of n lockers puts on their cgroup
// parent: limit itself when set (> 0), none when negative, else n ×
// MemPerLocker + MemStartRoom.
func memLimitFor(limit int64, n int) int64 {
	switch {
	case limit > 0:
		return limit
	case limit < 0:
		return 0
	}
	return int64(n)*MemPerLocker + MemStartRoom
}

// ParseBytes reads a size such as "16GiB", "2750M", "512MiB" or "1073741824"
// (binary units; a bare number is bytes). "0" is 0, "none" or "-1" is -1.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	if t == "none" || t == "-1" {
		return -1, nil
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("reading size %q: want e.g. 16GiB, 2750MiB or bytes", s)
	}
	return int64(v * float64(mult)), nil
}

// FormatBytes writes a size in MiB or GiB.
func FormatBytes(b int64) string {
	if b >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}
