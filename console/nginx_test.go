package console_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
	"lxcfleet/rollout"
)

// nginxExample is the packaged example config.
const nginxExample = "../packaging/nginx-lxcfleet-downtime.conf"

// requireNginx returns the nginx binary; it skips without one, and fails
// with CI=true (scripts/setup-host installs it).
func requireNginx(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	why := "no nginx: run scripts/setup-host (apt-get install nginx-light)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this nginx test cannot run: %s", why)
	}
	t.Skip(why)
	return ""
}

// nginxPrefix writes a main nginx.conf in a private folder (pid, logs and
// temp files there, no daemon, one process) that includes site, the text
// of a server config, and returns the folder and the main config.
func nginxPrefix(t *testing.T, site string) (dir, conf string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/site.conf;
}
`, dir)
	conf = filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, conf
}

func readExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(nginxExample)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNginxExampleLoads: `nginx -t` accepts the packaged example as it is
// shipped.
func TestNginxExampleLoads(t *testing.T) {
	nginx := requireNginx(t)
	dir, conf := nginxPrefix(t, readExample(t))
	out, err := exec.Command(nginx, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t on %s: %v\n%s", nginxExample, err, out)
	}
}

// nginxResult is one request through nginx.
type nginxResult struct {
	status      int
	kind        string // app, agent-page, static-page, other
	retryAfter  string
	maintenance bool // the agent's X-Lxcfleet-Maintenance header
	body        string
}

var nginxClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

func getThrough(t *testing.T, addr string) nginxResult {
	t.Helper()
	resp, err := nginxClient.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET through nginx: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := nginxResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), maintenance: resp.Header.Get("X-Lxcfleet-Maintenance") == "1", body: string(b)}
	switch {
	case r.status == 200 && strings.Contains(r.body, `"locker"`):
		r.kind = "app"
	case r.status == 503 && r.maintenance && strings.Contains(r.body, "Down for maintenance"):
		r.kind = "agent-page"
	case r.status == 503 && !r.maintenance && strings.Contains(r.body, "It will be back shortly") && r.retryAfter == "60":
		r.kind = "static-page"
	default:
		r.kind = fmt.Sprintf("other %d", r.status)
	}
	return r
}

// TestNginxExampleInFrontOfLockers runs the packaged example, with its
// ports templated, in a real nginx on loopback in front of a real locker
// and a real agent: the locker's requests pass through; while the locker
// is down (stopped, then during an offline update) nginx serves the
// agent's maintenance page (503, Retry-After, the agent's header); the app
// after the update; with the agent down too, the example's static page.
func TestNginxExampleInFrontOfLockers(t *testing.T) {
	nginx := requireNginx(t)
	testfleet.RequireLXC(t)
	e := newEnv(t, 2, testfleet.Options{StartupMS: 300}, func(c *agent.Config) {
		c.Defaults.Policy.MaxUnavailable = 1     // the last locker waits for the others' starts
		c.Defaults.Policy.Pacing = rollout.Fixed // (adaptive pacing would widen W)
	})
	target := e.lockers[len(e.lockers)-1] // started last by the update
	agentURL, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)

	site := readExample(t)
	for _, r := range []struct{ old, new string }{
		{"listen 80;", "listen " + listen + ";"},
		{"server 127.0.0.1:8080 ", "server " + agentURL.Host + " "},
		{"proxy_pass http://127.0.0.1:4101;", fmt.Sprintf("proxy_pass http://127.0.0.1:%d;", target.Port)},
	} {
		if !strings.Contains(site, r.old) {
			t.Fatalf("%s no longer holds %q: update the test's templating", nginxExample, r.old)
		}
		site = strings.Replace(site, r.old, r.new, 1)
	}
	dir, conf := nginxPrefix(t, site)
	cmd := exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	exited := make(chan struct{}) // closed once nginx exited; waitErr set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // nginx's fast shutdown, by PID
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out.String(), b)
		}
	})
	// Wait until nginx listens (or exits).
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", listen, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited: %v\n%s", waitErr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s after 10s: %v", listen, err)
		}
	}

	if r := getThrough(t, listen); r.kind != "app" || !strings.Contains(r.body, target.Name) {
		t.Fatalf("through nginx with the locker up: got %s %d %q, want the app of %s", r.kind, r.status, r.body, target.Name)
	}

	// The locker down: the agent's maintenance page, through nginx.
	ctx := context.Background()
	if _, err := e.fleet.Host.Stop(ctx, target.Name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := getThrough(t, listen); r.kind != "agent-page" || r.retryAfter == "" {
		t.Errorf("through nginx with the locker down: got %s %d (Retry-After %q) %q, want the agent's maintenance page", r.kind, r.status, r.retryAfter, r.body)
	}
	if err := e.fleet.Host.Start(ctx, target.Name); err != nil {
		t.Fatal(err)
	}

	// An offline update: a prober through nginx sees the app, the
	// agent's page while the locker is down, the app again after.
	waitFor(t, "the locker to answer through nginx again", 30*time.Second, func() bool { return getThrough(t, listen).kind == "app" })
	pctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var kinds []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for pctx.Err() == nil {
			resp, err := nginxClient.Get("http://" + listen + "/healthz")
			kind := "error"
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && strings.Contains(string(b), `"locker"`):
					kind = "app"
				case resp.StatusCode == 503 && resp.Header.Get("X-Lxcfleet-Maintenance") == "1":
					kind = "agent-page"
				default:
					kind = fmt.Sprintf("other %d", resp.StatusCode)
				}
			}
			mu.Lock()
			if len(kinds) == 0 || kinds[len(kinds)-1] != kind {
				kinds = append(kinds, kind)
			}
			mu.Unlock()
			select {
			case <-pctx.Done():
			case <-time.After(15 * time.Millisecond):
			}
		}
	}()
	job, err := e.agent.Submit(agent.Request{Kind: agent.KindUpdate, Strategy: agent.StrategyOffline, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if job, err = e.agent.Wait(wctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if job.State != agent.JobSucceeded {
		t.Fatalf("offline update: got %s (%s), want succeeded", job.State, job.Error)
	}
	waitFor(t, "the app through nginx after the update", 10*time.Second, func() bool { return getThrough(t, listen).kind == "app" })
	cancel()
	wg.Wait()
	t.Logf("through nginx during the offline update: %s", strings.Join(kinds, " → "))
	if len(kinds) < 3 || kinds[0] != "app" || kinds[len(kinds)-1] != "app" {
		t.Errorf("through nginx during the offline update: %v, want app → agent-page → app", kinds)
	}
	for _, k := range kinds {
		if k != "app" && k != "agent-page" {
			t.Errorf("through nginx during the offline update: got %q, want only the app and the agent's page (%v)", k, kinds)
		}
	}

	// The agent down too: the example's static page.
	e.stop()
	if _, err := e.fleet.Host.Stop(ctx, target.Name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := getThrough(t, listen); r.kind != "static-page" {
		t.Errorf("through nginx with the locker and the agent down: got %s %d (Retry-After %q) %q, want the static page", r.kind, r.status, r.retryAfter, r.body)
	}
	// And the locker back (the agent still down): the app.
	if err := e.fleet.Host.Start(ctx, target.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the app through nginx with the agent down", 30*time.Second, func() bool { return getThrough(t, listen).kind == "app" })
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond) // paces the poll: responses through nginx have no event to wait on
	}
}
