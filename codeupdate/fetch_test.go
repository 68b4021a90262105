package codeupdate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lxcfleet/codeupdate"
)

// Modes of the git server: serve, stall mid-transfer, trickle.
const (
	serveAll int32 = iota
	stallMid
	trickle
)

// gitServer is git's smart HTTP server (git http-backend through CGI) on
// 127.0.0.1 in front of one bare repository; in stallMid mode it sends the
// first 8 KiB of an upload-pack answer and then nothing, with the
// connection open; in trickle mode it sends one byte every 20 ms.
type gitServer struct {
	url  string
	mode atomic.Int32
}

func newGitServer(t *testing.T, bare string) *gitServer {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("no git-http-backend: %v", err)
	}
	s := &gitServer{}
	cgiH := &cgi.Handler{
		Path:   backend,
		Env:    []string{"GIT_PROJECT_ROOT=" + filepath.Dir(bare), "GIT_HTTP_EXPORT_ALL=1"},
		Logger: log.New(io.Discard, "", 0), // "copy error" when a stalled client gives up
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := s.mode.Load()
		if mode == serveAll || !strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			cgiH.ServeHTTP(w, r)
			return
		}
		cgiH.ServeHTTP(&slowWriter{ResponseWriter: w, ctx: r.Context(), mode: mode}, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	s.url = "http://" + ln.Addr().String() + "/" + filepath.Base(bare)
	return s
}

// slowWriter passes 8 KiB and then stalls until the client goes away, or
// trickles.
type slowWriter struct {
	http.ResponseWriter
	ctx  context.Context
	mode int32
	sent int
}

func (w *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if w.sent >= 8192 {
			switch w.mode {
			case stallMid:
				<-w.ctx.Done()
				return n, w.ctx.Err()
			case trickle:
				select {
				case <-w.ctx.Done():
					return n, w.ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := w.ResponseWriter.Write(p[n : n+1]); err != nil {
					return n, err
				}
				w.ResponseWriter.(http.Flusher).Flush()
				n++
				w.sent++
				continue
			}
		}
		k := min(len(p)-n, 8192-w.sent)
		if w.sent >= 8192 {
			k = len(p) - n
		}
		m, err := w.ResponseWriter.Write(p[n : n+k])
		n += m
		w.sent += m
		if err != nil {
			return n, err
		}
		w.ResponseWriter.(http.Flusher).Flush()
	}
	return n, nil
}

// randomFile returns n incompressible bytes.
func randomFile(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return string(b)
}

// TestFetchBounded serves the origin over git's smart HTTP on 127.0.0.1:
// a fetch that stalls mid-transfer ends after the stall timeout, one that
// trickles forever after the overall timeout; neither is taken for a
// corrupt mirror, and neither leaves a temporary pack. (The old fetch
// waited forever.)
func TestFetchBounded(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, plainFiles("// 1\n"))
	srv := newGitServer(t, o.url)
	m, logs := newManagerOpts(t, codeupdate.Options{Origin: srv.url, FetchStallTimeout: 2 * time.Second, FetchTimeout: 5 * time.Second})
	ctx := context.Background()
	if _, err := m.CheckUpdate(ctx, "main"); err != nil {
		t.Fatalf("CheckUpdate over HTTP: %v", err)
	}
	o.commit("big", map[string]string{"blob.bin": randomFile(1 << 20)})

	for _, c := range []struct {
		name string
		mode int32
		is   error
		want time.Duration
	}{
		{"stalled mid-transfer", stallMid, codeupdate.ErrFetchStalled, 2 * time.Second},
		{"trickling", trickle, codeupdate.ErrFetchTimeout, 5 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv.mode.Store(c.mode)
			defer srv.mode.Store(serveAll)
			before := takeSnapshot(t, m.Root())
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			begin := time.Now()
			go func() {
				_, err := m.Build(ctx, "main", nil)
				errc <- err
			}()
			var err error
			select {
			case err = <-errc:
			case <-time.After(c.want + 15*time.Second):
				cancel()
				<-errc
				t.Fatalf("Build: still fetching %v after a %v timeout", time.Since(begin), c.want)
			}
			took := time.Since(begin)
			t.Logf("Build: %v after %v", err, took)
			if !errors.Is(err, c.is) {
				t.Errorf("Build: got %v, want %v", err, c.is)
			}
			if took < c.want || took > c.want+5*time.Second {
				t.Errorf("Build took %v, want about %v", took, c.want)
			}
			if strings.Contains(logs.String(), "corrupt") {
				t.Errorf("log: got %q, want no corruption", logs.String())
			}
			if left, _ := filepath.Glob(filepath.Join(m.Root(), "repo.git", "objects", "pack", "tmp_*")); len(left) > 0 {
				t.Errorf("temporary packs: got %v, want none", left)
			}
			if after := takeSnapshot(t, m.Root()); after != before {
				t.Errorf("after a failed fetch: got %+v, want %+v", after, before)
			}
		})
	}
	if _, err := m.Build(ctx, "main", nil); err != nil {
		t.Errorf("Build once the origin answers: %v", err)
	}
}

// TestMirrorUpkeep: the mirror is repacked once it passes MaxPacks packs
// (the old mirror gained a pack per fetch forever), and a new Manager
// removes what a dead agent left (temporary packs, staging folders, a
// half-made mirror) unless a build holds the host lock.
func TestMirrorUpkeep(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, plainFiles("// 0\n"))
	m, logs := newManagerOpts(t, codeupdate.Options{Origin: o.url, MaxPacks: 3})
	ctx := context.Background()
	packs := func() int {
		p, _ := filepath.Glob(filepath.Join(m.Root(), "repo.git", "objects", "pack", "pack-*.pack"))
		return len(p)
	}
	most := 0
	for i := range 8 {
		o.commit(fmt.Sprint(i), map[string]string{"server.js": fmt.Sprintf("// %d\n", i)})
		if _, err := m.CheckUpdate(ctx, "main"); err != nil {
			t.Fatal(err)
		}
		most = max(most, packs())
	}
	if most > 3 || !strings.Contains(logs.String(), "mirror repacked") {
		t.Errorf("packs: got at most %d (repacked: %v), want at most 3", most, strings.Contains(logs.String(), "mirror repacked"))
	}
	rel, err := m.Build(ctx, "main", nil)
	if err != nil || rel.SHA != git(t, o.work, "rev-parse", "HEAD") {
		t.Fatalf("Build after repacks: got %s, %v", rel.SHA, err)
	}

	root := m.Root()
	leftovers := []string{
		filepath.Join(root, "releases", ".tmp-123"),
		filepath.Join(root, "repo.git", "objects", "pack", "tmp_pack_abc"),
		filepath.Join(root, "repo.git.new-abc"),
	}
	for _, l := range leftovers {
		writeFile(t, filepath.Join(l, "x"), "x", 0o644)
		if strings.Contains(l, "tmp_pack") {
			os.RemoveAll(l)
			writeFile(t, l, "partial pack", 0o644)
		}
	}
	unlock, err := m.Lock()
	if err != nil {
		t.Fatal(err)
	}
	newManager(t, root, o.url, 0)
	for _, l := range leftovers {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("%s while the host lock is held: got %v, want it kept", l, err)
		}
	}
	unlock()
	_, logs2 := newManager(t, root, o.url, 0)
	for _, l := range leftovers {
		if _, err := os.Stat(l); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a new Manager: got %v, want it removed", l, err)
		}
	}
	if !strings.Contains(logs2.String(), "removed leftover") {
		t.Errorf("log: got %q, want the removals", logs2.String())
	}
	if _, err := m.Build(ctx, "main", nil); err != nil {
		t.Errorf("Build after the cleanup: %v", err)
	}
}

// TestFetchDiskFull fetches into a mirror on a 4 MiB tmpfs a commit that
// does not fit: the error says the disk is full and how much is free, the
// mirror is not called corrupt and not re-cloned, and no temporary pack is
// left on the full disk.
func TestFetchDiskFull(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	requireRoot(t, "mounting a tmpfs")
	disk := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		// Lazily: go-git keeps a failed pack's (emptied) files open.
		if out, err := exec.Command("umount", "--lazy", disk).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", disk, err, out)
		}
	})
	o := newTestOrigin(t, plainFiles("// 1\n"))
	m, logs := newManagerOpts(t, codeupdate.Options{Root: filepath.Join(disk, "root"), Origin: o.url})
	ctx := context.Background()
	if _, err := m.CheckUpdate(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	o.commit("too big", map[string]string{"blob.bin": randomFile(8 << 20)})
	for _, op := range []string{"CheckUpdate", "Build"} {
		var err error
		if op == "Build" {
			_, err = m.Build(ctx, "main", nil)
		} else {
			_, err = m.CheckUpdate(ctx, "main")
		}
		t.Logf("%s: %v", op, err)
		if !errors.Is(err, codeupdate.ErrDiskFull) || !strings.Contains(err.Error(), "MiB free of 4.0 MiB") || strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: got %v, want ErrDiskFull with the free space, no corruption", op, err)
		}
	}
	if strings.Contains(logs.String(), "re-cloning") || strings.Contains(logs.String(), "corrupt") {
		t.Errorf("log: got %q, want no re-clone", logs.String())
	}
	if left, _ := filepath.Glob(filepath.Join(m.Root(), "repo.git", "objects", "pack", "tmp_*")); len(left) > 0 {
		t.Errorf("temporary packs on the full disk: got %v, want none", left)
	}
	if _, err := os.Stat(filepath.Join(m.Root(), "repo.git", "HEAD")); err != nil {
		t.Errorf("mirror: got %v, want it kept", err)
	}
}

// TestNonBareOrigin builds from a local origin that is a work tree, not a
// bare repository (local origins are served in-process by go-git).
func TestNonBareOrigin(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, plainFiles("// 1\n"))
	m, _ := newManager(t, "", o.work, 0)
	rel, err := m.Build(context.Background(), "main", nil)
	if err != nil || rel.SHA != git(t, o.work, "rev-parse", "HEAD") {
		t.Errorf("Build from a work tree: got %s, %v, want its head", rel.SHA, err)
	}
}
