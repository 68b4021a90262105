package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
)

// updateScreenshot refreshes testdata/screenshot.png (shown in the README)
// from the screenshot taken during the update.
var updateScreenshot = flag.Bool("update-screenshot", false, "copy the screenshot taken during the update to testdata/screenshot.png")

// page drives one headless Chromium tab.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots

	broken bool // a step failed: the later ones are skipped

	mu         sync.Mutex
	exceptions []string
}

// newPage starts a headless Chromium (as root it needs --no-sandbox) and
// records the page's uncaught exceptions.
func newPage(t *testing.T, exec string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exec),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1440, 1250),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	p := &page{t: t, ctx: ctx, dir: artifactDir(t)}
	// Start the browser with a context without a timeout (its first Run
	// owns the browser's life).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium %s: %v", exec, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.exceptions = append(p.exceptions, m.String())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluating %s: %v", expr, err)
	}
	return v
}

// text is the trimmed text of the element sel ("" when there is none).
func (p *page) text(sel string) string {
	p.t.Helper()
	b, _ := json.Marshal(sel)
	return strings.TrimSpace(eval[string](p, fmt.Sprintf(`(document.querySelector(%s) || {textContent: ''}).textContent`, b)))
}

func (p *page) visible(sel string) bool {
	b, _ := json.Marshal(sel)
	return eval[bool](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0; })()`, b))
}

// wait waits until the JavaScript condition cond is true: the browser
// checks it at every animation frame (chromedp's Poll, puppeteer's
// waitForFunction), so the test waits on the page, not on a clock.
func (p *page) wait(what, cond string, timeout time.Duration) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void]("!!("+cond+")", chromedp.WithPollingTimeout(timeout))); err != nil {
		p.fail("waiting %v for %s (%s): %v", timeout, what, cond, err)
	}
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do("clicking "+sel, chromedp.Click(chromedp.CSS(sel)))
}

func (p *page) typeInto(sel, value string) {
	p.t.Helper()
	p.setValue(sel, "")
	p.do("typing into "+sel, chromedp.SendKeys(chromedp.CSS(sel), value))
}

// setValue sets a form field's value as a user would: with input and
// change events.
func (p *page) setValue(sel, value string) {
	p.t.Helper()
	s, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	if !eval[bool](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false; e.value = %s;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`, s, v)) {
		p.fail("no field %s", sel)
	}
}

// screenshot saves the viewport as name in the artifact folder.
func (p *page) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Errorf("saving screenshot: %v", err)
		return ""
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// fail saves a screenshot and the page's text, then fails the test.
func (p *page) fail(format string, a ...any) {
	p.t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + "-failure.png"
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(p.dir, name), buf, 0o644)
	}
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
	if len(body) > 3000 {
		body = body[:3000]
	}
	p.t.Fatalf(format+"\nscreenshot: %s\npage text:\n%s", append(a, filepath.Join(p.dir, name), body)...)
}

func (p *page) noExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.exceptions {
		p.t.Errorf("uncaught exception in the page: %s", e)
	}
}

// confirm checks the open dialog says want, and confirms it.
func (p *page) confirm(want ...string) {
	p.t.Helper()
	p.wait("the confirmation dialog", `document.querySelector('#confirm').open`, 5*time.Second)
	text := p.text("#confirm")
	for _, w := range want {
		if !strings.Contains(text, w) {
			p.fail("the confirmation says %q, want it to mention %q", text, w)
		}
	}
	p.click("#confirm-ok")
	p.wait("the dialog to close", `!document.querySelector('#confirm').open`, 10*time.Second)
}

// waitJob waits for the job panel to show a finished job in state want.
func (p *page) waitJob(kind, want string, timeout time.Duration) {
	p.t.Helper()
	p.wait("a "+kind+" job in the panel", fmt.Sprintf(`document.querySelector('#job-kind').textContent.startsWith(%q)`, kind), 10*time.Second)
	p.wait(kind+" to end", `document.querySelector('#job-state').textContent !== 'running'`, timeout)
	if got := p.text("#job-state"); got != want {
		p.fail("%s ended %q, want %q (message: %s)", kind, got, want, p.text("#job-message"))
	}
}

// TestConsoleInBrowser drives the console in headless Chromium against a
// real agent with real lockers.
func TestConsoleInBrowser(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	begin := time.Now()
	const n = 4
	e := newEnv(t, n, testfleet.Options{StartupMS: 1200}, nil)
	// The first locker's init runs the older build 1: the page flags it.
	in, err := e.fleet.Host.Info(context.Background(), e.lockers[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	e.code.Pin(in.InitPID, e.code.Nth(0).Name)
	t.Logf("fleet of %d lockers and agent ready in %v; console at %s", n, time.Since(begin).Round(time.Millisecond), e.url)
	p := newPage(t, exec)
	step := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			if t.Failed() || p.broken {
				t.Skip("an earlier step failed")
			}
			p.t = t
			defer func() {
				if t.Failed() {
					p.broken = true
				}
			}()
			fn(t)
		})
	}

	step("wrong token is refused", func(t *testing.T) {
		p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
		p.typeInto("#login-token", "not-the-token")
		p.click("#login-submit")
		p.wait("the refusal", `!document.querySelector('#login-error').hidden`, 10*time.Second)
		if got := p.text("#login-error"); !strings.Contains(got, "refused this token") {
			t.Errorf("login error: got %q, want it to say the token was refused", got)
		}
		if p.visible("#app") {
			t.Error("the console shows the fleet after a wrong token")
		}
	})

	step("sign in shows the build and the lockers", func(t *testing.T) {
		p.typeInto("#login-token", e.token)
		p.click("#login-submit")
		p.wait("every locker in the table", fmt.Sprintf(`document.querySelectorAll('#lockers-table tbody tr[data-name]').length === %d`, n), 15*time.Second)
		if got := p.text("#build-number"); got != "#2" {
			t.Errorf("build number: got %q, want #2", got)
		}
		if got, want := p.text("#build-sha"), e.code.Nth(1).Short; got != want {
			t.Errorf("build sha: got %q, want %q", got, want)
		}
		for _, l := range e.lockers {
			row := fmt.Sprintf(`#lockers-table tr[data-name=%q]`, l.Name)
			if got := p.text(row + " td:nth-child(2)"); got != "running" {
				t.Errorf("%s state: got %q, want running", l.Name, got)
			}
		}
		p.wait("the older release flag on "+e.lockers[0].Name, fmt.Sprintf(`document.querySelector('#lockers-table tr[data-name=%q] [data-old]')`, e.lockers[0].Name), 10*time.Second)
		if old := eval[int](p, `document.querySelectorAll('#lockers-table [data-old]').length`); old != 1 {
			t.Errorf("lockers flagged on an older release: got %d, want 1", old)
		}
		if got := p.text("#count-off"); !strings.Contains(got, "1 locker on an older release") {
			t.Errorf("fleet card: got %q, want it to count 1 locker on an older release", got)
		}
		p.wait("health checks", fmt.Sprintf(`document.querySelectorAll('#lockers-table .pill.healthy').length === %d`, n), 15*time.Second)
		if got := p.text("#schedules"); !strings.Contains(got, "sunday-window") || !strings.Contains(got, "next") {
			t.Errorf("schedules: got %q, want sunday-window with its next run", got)
		}
		if got := eval[int](p, `document.querySelectorAll('#grid .tile.s-up').length`); got != n {
			t.Errorf("fleet map: got %d lockers up, want %d", got, n)
		}
	})

	step("update available", func(t *testing.T) {
		p.click("#btn-check")
		p.wait("the update check", `document.querySelector('#update-body').textContent.includes('commits behind')`, 15*time.Second)
		got := p.text("#update-body")
		for _, want := range []string{"2 commits behind main", "restart is enough", "locker: retry the owner sync"} {
			if !strings.Contains(got, want) {
				t.Errorf("update card: got %q, want it to contain %q", got, want)
			}
		}
	})

	step("offline update from the page", func(t *testing.T) {
		p.wait("no running job", `!document.querySelector('#btn-update').disabled`, 15*time.Second)
		// A short stage list: the newest stage must be scrolled into view
		// (it used to clip and hide a rollback at the end of a long job).
		if !eval[bool](p, `(() => { document.querySelector('#job-stages').style.maxHeight = '48px'; return true; })()`) {
			t.Fatal("could not shorten the stage list")
		}
		p.click("#btn-update")
		p.wait("the update dialog", `document.querySelector('#confirm').open`, 5*time.Second)
		p.setValue("#f-strategy", "offline")
		p.setValue("#f-window", "2")
		p.confirm("Switch current", fmt.Sprintf("all %d running lockers", n), "2 lockers at a time", "each stopped just before its own start", "Update 4 lockers (offline)")

		// Half way: some up again, some still starting.
		p.wait("lockers up while others start", `document.querySelector('#grid .tile.s-starting') && document.querySelector('#grid .tile.s-up')`, 30*time.Second)
		shot := p.screenshot("console-during-update.png")
		if shot != "" && *updateScreenshot {
			if b, err := os.ReadFile(shot); err == nil {
				_ = os.WriteFile(filepath.Join("testdata", "screenshot.png"), b, 0o644)
			}
		}
		// Offline stops each locker just before its own start: one step of
		// starts, as a rolling update's, no stop phase before it.
		if got := eval[string](p, `[...document.querySelectorAll('#job-waves tbody tr[data-wave]')].map(r => r.dataset.wave).join(',')`); got != "start" {
			t.Errorf("steps table: got %q, want an offline update's start", got)
		}
		p.wait("a time estimate", `/left · done by/.test(document.querySelector('#job-eta').textContent)`, 30*time.Second)
		if p.visible("#job-cancel") != true {
			t.Error("no Cancel button on a running job")
		}
		p.waitJob("update-code", "succeeded", 60*time.Second)
		if got := p.text("#job-progress-text"); got != "100%" {
			t.Errorf("progress: got %q, want 100%%", got)
		}
		if got := p.text("#job-counts"); !strings.Contains(got, fmt.Sprintf("%d of %d lockers done", n, n)) {
			t.Errorf("counts: got %q", got)
		}
		// The stage list keeps every stage and shows the newest (it used to
		// clip at 8 and hide a rollback at the end).
		p.wait("the newest stage in view", `(() => { const s = document.querySelector('#job-stages'); const li = s.lastElementChild;
			return s.scrollHeight > s.clientHeight && li && li.getBoundingClientRect().bottom <= s.getBoundingClientRect().bottom + 2; })()`, 10*time.Second)
		_ = eval[bool](p, `(() => { document.querySelector('#job-stages').style.maxHeight = ''; return true; })()`)
		p.wait("the new build number", `document.querySelector('#build-number').textContent === '#3'`, 10*time.Second)
		p.wait("every locker up on build 3", fmt.Sprintf(`document.querySelectorAll('#grid .tile.s-up').length === %d && !document.querySelector('#lockers-table [data-old]')`, n), 15*time.Second)
		p.wait("the job in the history", `[...document.querySelectorAll('#jobs-table tbody tr')].some(r => r.textContent.includes('update-code') && r.textContent.includes('succeeded'))`, 10*time.Second)
		// The update card follows the update (build 2 -> 3, main at 4): it
		// said "2 commits behind".
		p.wait("the update card refreshed after the update", `document.querySelector('#update-body').textContent.includes('1 commit behind main')`, 15*time.Second)
		for _, l := range e.lockers {
			if !healthy(l) {
				t.Errorf("%s does not answer after the update", l.Name)
			}
		}
	})

	step("failed job shows a clear message", func(t *testing.T) {
		p.click("#btn-update")
		p.wait("the update dialog", `document.querySelector('#confirm').open`, 5*time.Second)
		p.setValue("#f-target", "broken")
		p.confirm("Fetch and build")
		p.waitJob("update-code", "failed", 20*time.Second)
		got := p.text("#job-message")
		if !strings.Contains(got, "Job failed") || !strings.Contains(got, "nothing was stopped") {
			t.Errorf("job message: got %q, want the failure and that nothing was stopped", got)
		}
		if strings.Contains(got, "goroutine") || strings.Contains(got, ".go:") {
			t.Errorf("job message shows a stack trace: %q", got)
		}
	})

	step("cancel a job", func(t *testing.T) {
		p.click("#btn-update")
		p.wait("the update dialog", `document.querySelector('#confirm').open`, 5*time.Second)
		p.setValue("#f-target", "slow")
		p.confirm()
		p.wait("the running job", `document.querySelector('#job-state').textContent === 'running' && !document.querySelector('#job-cancel').hidden`, 10*time.Second)
		p.click("#job-cancel")
		p.confirm("Nothing new begins")
		p.waitJob("update-code", "cancelled", 15*time.Second)
		if got := p.text("#job-message"); !strings.HasPrefix(got, "Cancelled") {
			t.Errorf("job message: got %q, want Cancelled…", got)
		}
		if got := p.text("#build-number"); got != "#3" {
			t.Errorf("build after a cancelled update: got %q, want #3", got)
		}
	})

	step("stop all then start all", func(t *testing.T) {
		p.wait("no running job", `!document.querySelector('#btn-stop-all').disabled`, 15*time.Second)
		p.click("#btn-stop-all")
		p.confirm(fmt.Sprintf("%d running lockers", n), "DOWN until you start them again")
		p.waitJob("stop-all", "succeeded", 30*time.Second)
		p.wait("every tile down", fmt.Sprintf(`document.querySelectorAll('#grid .tile.s-down').length === %d`, n), 10*time.Second)
		p.wait("no running job", `!document.querySelector('#btn-start-all').disabled`, 15*time.Second)
		p.click("#btn-start-all")
		p.confirm(fmt.Sprintf("%d stopped lockers", n), "build #3")
		p.waitJob("start-all", "succeeded", 40*time.Second)
		if got := p.text("#job-progress-text"); got != "100%" {
			t.Errorf("start-all progress: got %q, want 100%%", got)
		}
		p.wait("every tile up", fmt.Sprintf(`document.querySelectorAll('#grid .tile.s-up').length === %d`, n), 10*time.Second)
	})

	step("restart one locker", func(t *testing.T) {
		name := e.lockers[1].Name
		p.wait("no running job", `!document.querySelector('#btn-update').disabled`, 15*time.Second)
		p.click(fmt.Sprintf(`button[data-restart=%q]`, name))
		p.confirm("Restart "+name, "Other lockers are not touched")
		p.waitJob("restart", "succeeded", 30*time.Second)
		if got := p.text("#job-counts"); !strings.Contains(got, "1 of 1 locker done") {
			t.Errorf("restart counts: got %q, want 1 of 1", got)
		}
	})

	step("the fleet map tells lockers off current", func(t *testing.T) {
		cur, err := e.code.Current()
		if err != nil {
			t.Fatal(err)
		}
		older, err := e.code.PreviousGood()
		if err != nil {
			t.Fatal(err)
		}
		// current moves without a restart: every running locker is off it.
		if _, err := e.code.Switch(context.Background(), older, "test"); err != nil {
			t.Fatal(err)
		}
		p.wait("every tile marked off current", fmt.Sprintf(`document.querySelectorAll('#grid .tile.off').length === %d`, n), 15*time.Second)
		if got := p.text(`#legend [data-legend=off]`); !strings.Contains(got, fmt.Sprintf("not on current %d", n)) {
			t.Errorf("legend: got %q, want %d not on current", got, n)
		}
		if _, err := e.code.Switch(context.Background(), cur, "test"); err != nil {
			t.Fatal(err)
		}
		p.wait("no tile marked once current is back", `document.querySelectorAll('#grid .tile.off').length === 0 && document.querySelectorAll('#grid .tile').length > 0`, 15*time.Second)
	})

	step("a target marked bad is flagged", func(t *testing.T) {
		e.code.AddBadHead()
		p.wait("no running job", `!document.querySelector('#btn-check').disabled`, 15*time.Second)
		p.click("#btn-check")
		p.wait("the bad target on the update card", `document.querySelector('#update-body').textContent.includes('marked bad')`, 15*time.Second)
		if got := p.text("#update-body"); !strings.Contains(got, "--force") {
			t.Errorf("update card: got %q, want it to say an update needs --force", got)
		}
	})

	step("force an update to a release marked bad", func(t *testing.T) {
		p.wait("no running job", `!document.querySelector('#btn-update').disabled`, 15*time.Second)
		p.click("#btn-update")
		p.wait("the update dialog", `document.querySelector('#confirm').open`, 5*time.Second)
		p.setValue("#f-target", "main")
		p.wait("the warning that the target is marked bad", `document.querySelector('#confirm-text [data-bad-target]')`, 5*time.Second)
		if got := p.text("#confirm-ok"); strings.Contains(got, "Force") {
			t.Errorf("confirm button %q before force is checked", got)
		}
		if !eval[bool](p, `(() => { const f = document.querySelector('#f-force'); f.checked = true; f.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`) {
			t.Fatal("no force checkbox")
		}
		if got := p.text("#confirm-ok"); !strings.HasPrefix(got, "Force update of") || !eval[bool](p, `document.querySelector('#confirm-ok').classList.contains('danger')`) {
			t.Errorf("confirm button %q: want a danger button saying Force", got)
		}
		p.confirm("Forced: the update goes ahead even if release " + newestRelease(t, e.code) + " is marked bad")
		p.waitJob("update-code", "succeeded", 60*time.Second)
		j, err := e.agent.Job(p.text("#job-id"))
		if err != nil || !j.Request.Force {
			t.Errorf("forced update's request: force %v (%v), want true", j.Request.Force, err)
		}
	})

	step("a narrow screen needs no sideways scrolling", func(t *testing.T) {
		p.do("a 390 px wide screen", chromedp.EmulateViewport(390, 844))
		defer p.do("the wide screen again", chromedp.EmulateViewport(1440, 1250))
		p.wait("the layout at 390 px", `window.innerWidth === 390`, 5*time.Second)
		if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
			wide := eval[string](p, `[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391 && getComputedStyle(e).position !== 'fixed').slice(0, 8).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).split(' ')[0] : '') + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')`)
			t.Errorf("page is %d px wide on a 390 px screen; too wide: %s", w, wide)
		}
		p.screenshot("console-narrow.png")
	})

	step("agent down shows a clear message", func(t *testing.T) {
		e.stop()
		p.wait("the agent-down banner", `!document.querySelector('#banner').hidden`, 15*time.Second)
		got := p.text("#banner")
		if !strings.Contains(got, "not answering") {
			t.Errorf("banner: got %q, want it to say the agent is not answering", got)
		}
		if !p.visible("#lockers-table") {
			t.Error("the page went blank when the agent stopped")
		}
		if !eval[bool](p, `document.querySelector('#btn-update').disabled`) {
			t.Error("operations stay enabled while the agent is down")
		}
		p.screenshot("console-agent-down.png")
	})
	p.t = t
	p.noExceptions()
	t.Logf("browser test took %v", time.Since(begin).Round(time.Millisecond))
}

func healthy(l testfleet.Locker) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return probe(ctx, l.Port).kind == "app"
}

var _ = agent.KindUpdate

// newestRelease is the name of code's newest release.
func newestRelease(t *testing.T, code *fakecode.Code) string {
	rs, err := code.Releases() // newest first
	if err != nil || len(rs) == 0 {
		t.Fatalf("releases: %v (%d)", err, len(rs))
	}
	return rs[0].Name
}
