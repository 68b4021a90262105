package packaging_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// needRoot skips without root, and fails in CI.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: the package tests mount an overlay and run dpkg")
		}
		t.Skip("needs root (mounts an overlay, runs dpkg)")
	}
}

var debOnce struct {
	sync.Once
	path, log string
	err       error
	dir       string
}

// buildDeb builds the .deb once per test run with packaging/build-deb.
func buildDeb(t *testing.T) string {
	t.Helper()
	need(t, "dpkg-buildpackage")
	need(t, "dh")
	debOnce.Do(func() {
		debOnce.dir, debOnce.err = os.MkdirTemp("", "lxcfleet-deb-")
		if debOnce.err != nil {
			return
		}
		cmd := exec.Command("./build-deb", debOnce.dir)
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		debOnce.path, debOnce.log, debOnce.err = strings.TrimSpace(string(out)), errb.String(), err
	})
	if debOnce.err != nil {
		t.Fatalf("build-deb: %v\n%s", debOnce.err, debOnce.log)
	}
	return debOnce.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debOnce.dir != "" {
		os.RemoveAll(debOnce.dir)
	}
	os.Exit(code)
}

// TestDebLintian: lintian finds no error in the package, and no command
// without its man page.
func TestDebLintian(t *testing.T) {
	need(t, "lintian")
	deb := buildDeb(t)
	out, err := exec.Command("lintian", "--fail-on", "error", "--allow-root", deb).CombinedOutput()
	if err != nil || strings.Contains(string(out), "\nE: ") || strings.HasPrefix(string(out), "E: ") {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "no-manual-page") {
		t.Errorf("lintian: a command without a man page:\n%s", out)
	}
	t.Logf("lintian:\n%s", out)
}

// TestDebInstallsIntoThrowawayRoot installs the .deb with the real dpkg into
// an overlay of this host (writes go to a tmpfs, thrown away): the unit is
// enabled (deb-systemd-helper), the config is a conffile, the binary is
// stripped and says its version, the nginx example is there; a purge
// removes the unit's enablement and the config.
func TestDebInstallsIntoThrowawayRoot(t *testing.T) {
	needRoot(t)
	need(t, "dpkg")
	deb := buildDeb(t)
	root := overlayRoot(t)
	dpkg := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dpkg", append([]string{"--root=" + root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dpkg("-i", deb)
	st := dpkg("-s", "lxcfleet")
	for _, want := range []string{"Status: install ok installed", "Conffiles:", "/etc/lxcfleet/lxcfleet.toml", "Depends: lxc, tini,", "libc6 (>="} {
		if !strings.Contains(st, want) {
			t.Errorf("dpkg -s lacks %q:\n%s", want, st)
		}
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/lxcfleet.service")
	if target, err := os.Readlink(wants); err != nil || !strings.HasSuffix(target, "/lxcfleet.service") {
		t.Errorf("unit not enabled on install: %s -> %q (%v)", wants, target, err)
	}
	post, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info/lxcfleet.postinst"))
	if !strings.Contains(string(post), "deb-systemd-invoke $_dh_action 'lxcfleet.service'") {
		t.Errorf("postinst does not start the unit where systemd runs:\n%s", post)
	}
	// The lockers' unit (the boot and shutdown path) is enabled, and an
	// upgrade neither stops nor restarts it (its stop stops every locker).
	lwants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/lxcfleet-lockers.service")
	if target, err := os.Readlink(lwants); err != nil || !strings.HasSuffix(target, "/lxcfleet-lockers.service") {
		t.Errorf("lockers unit not enabled on install: %s -> %q (%v)", lwants, target, err)
	}
	if strings.Contains(string(post), "deb-systemd-invoke restart 'lxcfleet-lockers.service'") || strings.Contains(string(post), "$_dh_action 'lxcfleet-lockers.service'") {
		t.Errorf("postinst restarts the lockers' unit on upgrade (it would stop every locker):\n%s", post)
	}
	prerm, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info/lxcfleet.prerm"))
	for _, block := range strings.Split(string(prerm), "# End automatically added section") {
		if strings.Contains(block, "'lxcfleet-lockers.service'") && !strings.Contains(block, `[ "$1" = remove ]`) {
			t.Errorf("prerm stops the lockers' unit on upgrade:\n%s", prerm)
		}
	}
	for _, f := range []string{"usr/share/doc/lxcfleet/examples/nginx-lxcfleet-downtime.conf", "usr/share/doc/lxcfleet/copyright",
		"usr/share/doc/lxcfleet/changelog.gz", "usr/share/doc/lxcfleet/README.md", "usr/share/bash-completion/completions/lxcfleet",
		"usr/share/man/man8/lxcfleet.8.gz", "usr/share/man/man8/lxcfleet-update-code.8.gz", "usr/share/man/man8/lxc-stop-all.8.gz", "usr/sbin/lxc-stop-all", "usr/sbin/update-code", "usr/sbin/lxc-start-all", "lib/systemd/system/lxcfleet.service", "lib/systemd/system/lxcfleet-lockers.service",
		"usr/libexec/lxcfleet/lxcfleet-listenfd", "lib/systemd/system/lxcfleet-holder.service"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: /%s", f)
		}
	}
	bin := filepath.Join(root, "usr/bin/lxcfleet")
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	if ef.Section(".symtab") != nil {
		t.Errorf("%s is not stripped (has .symtab)", bin)
	}
	ef.Close()
	version := strings.TrimPrefix(strings.TrimSuffix(filepath.Base(deb), "_"+debArch(t)+".deb"), "lxcfleet_")
	out, err := exec.Command("chroot", root, "/usr/bin/lxcfleet", "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "lxcfleet "+version {
		t.Errorf("lxcfleet --version: got %q (%v), want %q", out, err, "lxcfleet "+version)
	}

	dpkg("--purge", "lxcfleet")
	if _, err := os.Lstat(wants); err == nil {
		t.Errorf("purge left the unit enabled: %s", wants)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/lxcfleet/lxcfleet.toml")); err == nil {
		t.Errorf("purge left /etc/lxcfleet/lxcfleet.toml")
	}
	if _, err := os.Stat(bin); err == nil {
		t.Errorf("purge left %s", bin)
	}
}

func debArch(t *testing.T) string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// overlayRoot mounts an overlay of / whose writes go to a fresh tmpfs, with
// /dev and /proc bound in, and unmounts it all when the test ends.
func overlayRoot(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	layer, merged := filepath.Join(dir, "layer"), filepath.Join(dir, "root")
	for _, d := range []string{layer, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v\n%s", args, err, out)
		}
	}
	var mounted []string
	t.Cleanup(func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if out, err := exec.Command("umount", "-l", mounted[i]).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", mounted[i], err, out)
			}
		}
	})
	mount("-t", "tmpfs", "tmpfs", layer)
	mounted = append(mounted, layer)
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(layer, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount("-t", "overlay", "overlay", "-o", "lowerdir=/,upperdir="+layer+"/upper,workdir="+layer+"/work", merged)
	mounted = append(mounted, merged)
	for _, d := range []string{"dev", "proc"} {
		mount("--bind", "/"+d, filepath.Join(merged, d))
		mounted = append(mounted, filepath.Join(merged, d))
	}
	// A host without systemd as PID 1 has no /run/systemd/system: the
	// postinst enables the unit but does not try to start it.
	return merged
}

// TestDebVersionSorts: versions from tags sort in commit order for dpkg.
func TestDebVersionSorts(t *testing.T) {
	need(t, "git")
	need(t, "dpkg")
	repo := t.TempDir()
	script, err := os.ReadFile("deb-version")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "packaging/deb-version"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	version := func() string {
		t.Helper()
		cmd := exec.Command("packaging/deb-version")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "VERSION=")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("deb-version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "one")
	var got []string
	got = append(got, version())
	git("commit", "-q", "--allow-empty", "-m", "two")
	got = append(got, version())
	git("tag", "v1.2.3")
	got = append(got, version())
	git("commit", "-q", "--allow-empty", "-m", "three")
	got = append(got, version())
	git("tag", "v1.2.4")
	got = append(got, version())
	if got[2] != "1.2.3" || got[4] != "1.2.4" || !strings.HasPrefix(got[3], "1.2.3+1.g") {
		t.Errorf("versions: got %q", got)
	}
	for i := 1; i < len(got); i++ {
		if err := exec.Command("dpkg", "--compare-versions", got[i-1], "lt", got[i]).Run(); err != nil {
			t.Errorf("dpkg does not sort %s before %s", got[i-1], got[i])
		}
	}
}
