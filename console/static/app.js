// lxcfleet console: plain JavaScript, no build step, no dependencies.
// Every call to the API sends the token from sessionStorage as a bearer
// header; a running job is followed through its Server-Sent Events stream,
// read with fetch() so that the header can be sent.
'use strict';

(function () {
  const TOKEN_KEY = 'lxcfleet.token';
  const POLL_MS = 2500;
  const $ = (id) => document.getElementById(id);

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    host: null,
    lockers: [],
    jobs: [],
    lastOK: 0,
    down: false,
    pollTimer: 0,
    live: null, // the job on screen (see newLive)
    filter: '',
  };

  // ---------- helpers ----------

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  function dur(ms) {
    if (!isFinite(ms) || ms < 0) return '—';
    const s = Math.round(ms / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  function parseTime(t) {
    if (!t) return null;
    const d = new Date(t);
    return isNaN(d) || d.getFullYear() < 2000 ? null : d;
  }

  function ago(t) {
    const d = parseTime(t);
    if (!d) return '';
    const ms = Date.now() - d.getTime();
    return ms < 0 ? 'in ' + dur(-ms) : dur(ms) + ' ago';
  }

  function clock(d) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function stamp(t) {
    const d = parseTime(t);
    if (!d) return '—';
    const today = new Date().toDateString() === d.toDateString();
    return today ? clock(d) : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + clock(d);
  }

  function goDuration(s) {
    // "1m30.5s" -> ms; numbers are nanoseconds.
    if (typeof s === 'number') return s / 1e6;
    if (!s) return 0;
    let ms = 0;
    const re = /([\d.]+)(h|ms|m|s|µs|us|ns)/g;
    let m;
    while ((m = re.exec(s))) {
      const v = parseFloat(m[1]);
      ms += { h: 3600e3, m: 60e3, s: 1e3, ms: 1, µs: 1e-3, us: 1e-3, ns: 1e-6 }[m[2]] * v;
    }
    return ms;
  }

  let toastTimer = 0;
  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.className = 'toast' + (bad ? ' bad' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 9000 : 4500);
  }

  // A message fit for an operator, whatever was thrown: never a stack.
  function explain(err) {
    if (err instanceof ApiError) return err.message;
    return 'The console hit an unexpected problem (' + (err && err.message ? err.message : String(err)) + '). Reload the page; the agent itself is unaffected.';
  }

  // ---------- API ----------

  // The last answer to each GET that came with an entity tag (the locker
  // list): the next poll names it, and the agent answers 304 and no body
  // while nothing changed.
  const tagged = new Map();

  async function api(method, path, body) {
    let res;
    const kept = method === 'GET' ? tagged.get(path) : undefined;
    try {
      res = await fetch(path, {
        method,
        headers: Object.assign(
          { Authorization: 'Bearer ' + S.token, Accept: 'application/json' },
          body !== undefined ? { 'Content-Type': 'application/json' } : {},
          kept ? { 'If-None-Match': kept.etag } : {}),
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'The agent at ' + location.host + ' is not answering: it may be restarting or stopped (on the host: systemctl status lxcfleet).');
    }
    if (res.status === 304 && kept) return kept.data;
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (res.status === 401) throw new ApiError(401, 'The agent refused the token.');
    if (!res.ok) {
      let msg = data && data.error ? data.error : 'The agent answered HTTP ' + res.status + '.';
      if (res.status >= 502 && !(data && data.error)) msg = 'The agent at ' + location.host + ' is not answering (HTTP ' + res.status + ' from a proxy).';
      throw new ApiError(res.status, msg, data);
    }
    const etag = method === 'GET' ? res.headers.get('ETag') : null;
    if (etag) tagged.set(path, { etag, data });
    else tagged.delete(path);
    return data;
  }

  // ---------- sign in ----------

  function showLogin(message) {
    stopPolling();
    stopStream();
    $('app').hidden = true;
    $('topinfo').hidden = true;
    $('conn').hidden = true;
    $('logout').hidden = true;
    $('banner').hidden = true;
    $('login').hidden = false;
    const e = $('login-error');
    e.hidden = !message;
    e.textContent = message || '';
    $('login-token').value = '';
    $('login-token').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $('login-token').value.trim();
    const btn = $('login-submit');
    if (!token) return;
    btn.disabled = true;
    btn.textContent = 'Checking…';
    S.token = token;
    try {
      const host = await api('GET', '/v1/host');
      sessionStorage.setItem(TOKEN_KEY, token);
      S.host = host;
      showApp();
    } catch (err) {
      S.token = '';
      const e = $('login-error');
      e.hidden = false;
      e.textContent = err.status === 401
        ? 'The agent refused this token. Check listen.token (or listen.token_file) in /etc/lxcfleet/lxcfleet.toml.'
        : explain(err);
    } finally {
      btn.disabled = false;
      btn.textContent = 'Sign in';
    }
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = '';
    S.host = null;
    S.live = null;
    showLogin('');
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('topinfo').hidden = false;
    $('conn').hidden = false;
    $('logout').hidden = false;
    render();
    poll();
  }

  // ---------- polling ----------

  function stopPolling() {
    clearTimeout(S.pollTimer);
    S.pollTimer = 0;
  }

  async function poll() {
    stopPolling();
    const [h, c, j] = await Promise.allSettled([
      api('GET', '/v1/host'),
      api('GET', '/v1/containers'),
      api('GET', '/v1/jobs?limit=30'),
    ]);
    const failed = [h, c, j].find((r) => r.status === 'rejected');
    if (failed && failed.reason && failed.reason.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('The agent no longer accepts your token (it may have been changed). Sign in again.');
      return;
    }
    if (h.status === 'fulfilled') S.host = h.value;
    if (c.status === 'fulfilled') S.lockers = (c.value && c.value.containers) || [];
    if (j.status === 'fulfilled') S.jobs = (j.value && j.value.jobs) || [];
    if (failed) {
      setDown(explain(failed.reason));
    } else {
      S.lastOK = Date.now();
      setDown('');
    }
    const running = S.host && S.host.running_job;
    if (running && (!S.live || S.live.id !== running.id || S.live.ended)) {
      if (!S.live || S.live.id !== running.id) follow(running);
    }
    render();
    pollFleet();
    S.pollTimer = setTimeout(poll, POLL_MS);
  }

  // The fleet view (only when this host's agent has [fleet]): the group's
  // hosts from the etcd registry, who holds the update slots, the channel.
  async function pollFleet() {
    let st;
    try { st = await api('GET', '/v1/fleet'); } catch (e) { return; }
    const card = $('hosts-card');
    if (!st || !st.enabled) { card.hidden = true; return; }
    card.hidden = false;
    $('fleet-group').textContent = 'fleet group ' + (st.group || '');
    const ch = st.channel;
    let line = st.connected ? '' : 'etcd unreachable (' + (st.error || 'no answer') + '): this host starts no update until it is back. ';
    if (ch && ch.release) {
      line += 'release ' + ch.release.ref + ' @ ' + (ch.release.commit || '').slice(0, 12) +
        ' · at most ' + ((ch.policy && ch.policy.max_hosts) || 1) + ' at once' + (ch.paused ? ' · PAUSED: ' + (ch.paused_reason || '') : '');
    }
    $('fleet-channel').textContent = line;
    S.fleet = st;
    renderFleetPolicy(st);
    let hosts, holders;
    try {
      [hosts, holders] = await Promise.all([api('GET', '/v1/fleet/hosts'), api('GET', '/v1/fleet/holders')]);
    } catch (e) { return; }
    const slot = {};
    for (const h of holders || []) slot[h.host] = h;
    const tb = $('hosts-table').querySelector('tbody');
    tb.textContent = '';
    for (const h of hosts || []) {
      const lk = h.lockers || {};
      const total = Object.values(lk).reduce((a, b) => a + b, 0);
      const s = slot[h.id];
      const cells = [h.id, h.state, h.build ? '#' + h.build : '—', (h.commit || '').slice(0, 12), (lk.RUNNING || 0) + '/' + total + ' running',
        s ? 'slot ' + s.slot + (s.failed ? ' (failed)' : '') : '', h.note || ''];
      const tr = document.createElement('tr');
      for (const c of cells) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
  }

  // renderFleetPolicy shows the channel's policy as `lxcfleet fleet
  // channel` does: its limits, the update timeout, and the update windows
  // with whether they are open now (the agent computes that).
  function renderFleetPolicy(st) {
    const ch = st.channel;
    const p = (ch && ch.policy) || {};
    const pol = $('fleet-policy');
    const win = $('fleet-windows');
    if (!ch) {
      pol.textContent = 'No release published to this group yet.';
      win.textContent = '';
    } else {
      const parts = ['policy: at most ' + plural(p.max_hosts || 1, 'host') + ' at once'];
      if (p.max_per_period) parts.push(p.max_per_period + ' updates per ' + p.period);
      if (p.safe_mode) parts.push('safe mode (a canary first)');
      parts.push((p.max_failed_hosts || 1) + ' failed ' + ((p.max_failed_hosts || 1) === 1 ? 'host pauses' : 'hosts pause'));
      parts.push(p.update_timeout ? 'update timeout ' + p.update_timeout + ' (an update past it fails)' : 'no update timeout');
      pol.textContent = parts.join(', ');
      pol.dataset.timeout = p.update_timeout || '';
      if (p.windows && p.windows.length) {
        const w = st.window || {};
        const now = w.error ? 'unreadable: ' + w.error : w.open ? 'open now' : 'closed; next opens ' + (parseTime(w.next) ? stamp(w.next) + ' (' + ago(w.next) + ')' : '—');
        win.textContent = 'update windows: ' + w.time_zone + ', ' + w.for + ' after each of ' +
          p.windows.join(' · ') + ' (' + now + ')';
        win.dataset.open = w.open ? '1' : '0';
      } else {
        win.textContent = 'update windows: none (hosts update whenever the channel lets them)';
        win.dataset.open = '';
      }
    }
    const paused = !!(ch && ch.paused);
    $('btn-pause').hidden = paused;
    $('btn-resume').hidden = !paused;
    $('btn-pause').disabled = !ch || S.down;
    $('btn-resume').disabled = S.down;
    $('btn-publish').disabled = S.down;
  }

  // The fleet's controls go through the agent's fleet API, the code the
  // CLI's `fleet publish` and `fleet pause` use: publish resolves the ref
  // on the origin before anything is written (a refusal comes back as a
  // 400 with its reason), and guards against a release published since
  // the page showed the channel (if_release).
  function confirmPublish() {
    const ch = S.fleet && S.fleet.channel;
    const seen = ch && ch.release ? ch.release.commit : 'none';
    const fields = el('div', { class: 'fields' },
      el('label', { for: 'f-ref' }, 'Ref'),
      el('input', { id: 'f-ref', value: 'main', placeholder: 'branch, tag or commit of the origin' }),
      el('label', { for: 'f-commit' }, 'Commit'),
      el('input', { id: 'f-commit', placeholder: 'optional: the full commit id the ref must be' }),
      el('div', { class: 'hint' }, 'Refused unless the origin has it; with a commit, unless the ref still points at it.'));
    ask('Publish a release to group ' + ((S.fleet && S.fleet.group) || '') + '?', [
      el('p', {}, 'Every host of the group takes the release, ', el('b', {}, 'at most ' + plural((ch && ch.policy && ch.policy.max_hosts) || 1, 'host') + ' at once'),
        ', each with its own rolling update, health-gated; a failed host pauses the channel.'),
      el('p', { class: 'muted' }, 'It replaces ' + (ch && ch.release ? ch.release.ref + ' @ ' + (ch.release.commit || '').slice(0, 12) : 'nothing (no release yet)') +
        '; if someone publishes meanwhile, this publish is refused.'),
    ], 'Publish', async () => {
      const body = { ref: $('f-ref').value.trim(), if_release: seen };
      const c = $('f-commit').value.trim();
      if (c) body.commit = c;
      const res = await api('POST', '/v1/fleet/publish', body);
      toast('Published ' + res.release.ref + ' @ ' + (res.release.commit || '').slice(0, 12) + ' to group ' + ((S.fleet && S.fleet.group) || '') + '.');
      pollFleet();
    }, { fields });
  }

  function confirmPause() {
    const fields = el('div', { class: 'fields' },
      el('label', { for: 'f-reason' }, 'Reason'),
      el('input', { id: 'f-reason', value: '', placeholder: 'paused by an operator' }));
    ask('Pause the group’s updates?', [
      el('p', {}, 'No host of group ', el('b', {}, (S.fleet && S.fleet.group) || ''), ' starts an update until the channel is resumed.'),
      el('p', { class: 'muted' }, 'Updates already running finish under their own policy; lockers keep running.'),
    ], 'Pause the group', async () => {
      const reason = $('f-reason').value.trim();
      await api('POST', '/v1/fleet/pause', reason ? { reason } : {});
      toast('Paused group ' + ((S.fleet && S.fleet.group) || '') + '.');
      pollFleet();
    }, { danger: true, fields });
  }

  function confirmResume() {
    const ch = S.fleet && S.fleet.channel;
    ask('Resume the group’s updates?', [
      el('p', {}, 'Hosts of group ', el('b', {}, (S.fleet && S.fleet.group) || ''), ' may take ',
        ch && ch.release ? el('b', {}, ch.release.ref + ' @ ' + (ch.release.commit || '').slice(0, 12)) : 'the channel’s release', ' again, by its policy.'),
      ch && ch.paused_reason ? el('div', { class: 'warn' }, 'It was paused: ' + ch.paused_reason) : '',
    ], 'Resume', async () => {
      await api('POST', '/v1/fleet/resume', {});
      toast('Resumed group ' + ((S.fleet && S.fleet.group) || '') + '.');
      pollFleet();
    });
  }

  function setDown(message) {
    const b = $('banner');
    const conn = $('conn');
    S.down = !!message;
    if (message) {
      const since = S.lastOK ? ' Last contact ' + ago(new Date(S.lastOK)) + '.' : '';
      b.textContent = message + since + ' Retrying every few seconds; what you see below may be out of date.';
      b.hidden = false;
      conn.className = 'conn down';
      $('conn-text').textContent = 'agent not answering';
    } else {
      b.hidden = true;
      conn.className = 'conn ok';
      $('conn-text').textContent = 'live';
    }
    const busy = !!(S.host && S.host.running_job) || S.down;
    for (const id of ['btn-update', 'btn-stop-all', 'btn-start-all', 'btn-rollback']) $(id).disabled = busy;
    $('busy-note').textContent = S.down ? 'Operations are disabled while the agent is not answering.'
      : (S.host && S.host.running_job ? 'A job is running; new operations wait until it ends.' : '');
  }

  // ---------- rendering ----------

  function render() {
    renderHost();
    renderGrid();
    renderLockers();
    renderJobs();
    renderJob();
  }

  function renderHost() {
    const h = S.host;
    if (!h) return;
    $('host-name').textContent = h.hostname || 'this host';
    $('agent-version').textContent = h.agent_version ? 'agent ' + h.agent_version : '';
    document.title = (h.hostname || 'lxcfleet') + ' · lxcfleet';
    const b = h.build;
    if (b) {
      $('build-number').textContent = '#' + b.build;
      $('build-sha').textContent = b.short || (b.sha || '').slice(0, 12);
      $('build-ref').textContent = b.ref ? 'on ' + b.ref : '';
      $('build-subject').textContent = b.subject || '';
      $('build-subject').title = b.subject || '';
      $('build-time').textContent = 'built ' + stamp(b.build_time) + (b.commit_time ? ' · committed ' + ago(b.commit_time) : '');
    } else {
      $('build-number').textContent = 'none';
      $('build-sha').textContent = '';
      $('build-ref').textContent = '';
      $('build-subject').textContent = 'No release yet: run an update to build one.';
      $('build-time').textContent = '';
    }
    // The card counts what the map and the table show: one view of each
    // locker (viewState), the running job's tally over the inventory.
    const counts = viewCounts();
    $('count-running').textContent = counts.up || 0;
    $('count-total').textContent = S.lockers.length || h.lockers || 0;
    const other = STATES.map(([k]) => k).filter((k) => k !== 'up' && counts[k]).map((k) => counts[k] + ' ' + k);
    $('count-detail').textContent = other.length ? other.join(' · ') : (S.lockers.length ? 'all up' : '');
    $('count-detail').dataset.counts = JSON.stringify(counts);
    const off = $('count-off');
    off.replaceChildren();
    if (h.off_current) off.append(el('span', { class: 'badge amber', text: plural(h.off_current, 'locker') + ' on an older release' }), ' ');
    // Lockers whose config LXC cannot load: jobs leave them alone and
    // fail naming them; the badge names them and says why.
    const broken = S.lockers.filter((l) => l.state === 'BROKEN');
    if (broken.length) off.append(el('span', { class: 'badge red', 'data-broken': broken.length,
      title: broken.map((l) => l.name + ': ' + (l.error || '')).join('\n') },
      plural(broken.length, 'locker') + ' LXC cannot load: ' + broken.slice(0, 3).map((l) => l.name).join(', ') + (broken.length > 3 ? ', …' : '')));
    renderUpdate(h.update_check);
    renderSchedules(h.schedules || []);
  }

  function renderUpdate(u) {
    const box = $('update-body');
    box.replaceChildren();
    box.className = 'sub';
    if (!u || u.checked === false) {
      box.className = 'sub muted';
      box.textContent = 'Not checked yet. “Check now” fetches the origin without building anything.';
      return;
    }
    const checked = u.checked_at ? ' · checked ' + ago(u.checked_at) : '';
    if (!u.available) {
      box.append(el('span', { class: 'badge green', text: 'up to date' }), ' with ', el('code', { text: u.target || '' }),
        el('span', { class: 'muted', text: checked }));
      return;
    }
    const need = u.target_built
      ? el('span', { class: 'badge blue', 'data-need': 'built', title: 'release ' + (u.target_release || '') + ' is built already: the update builds nothing', text: 'built already · restart is enough' })
      : u.npm_needed
        ? el('span', { class: 'badge amber', 'data-need': 'npm', title: 'package-lock.json changed: the update runs npm', text: 'npm install needed' })
        : el('span', { class: 'badge blue', 'data-need': 'restart', title: 'dependencies unchanged: node_modules is reused', text: 'restart is enough' });
    const bad = u.target_bad
      ? el('div', { class: 'sub' }, el('span', { class: 'badge red', title: 'a failed update or a rollback marked this release bad',
        text: 'release ' + (u.target_release || '') + ' is marked bad' }), ' updating to it needs --force')
      : '';
    box.append(
      el('div', {}, el('b', { text: plural(u.behind || 0, 'commit') + ' behind ' }), el('code', { text: u.target || '' }), ' ', need,
        el('span', { class: 'muted', text: (u.changed_files ? ' · ' + plural(u.changed_files, 'file') + ' changed' : '') + checked })),
      bad,
      el('ul', { class: 'commits' }, (u.commits || []).slice(0, 12).map((c) =>
        el('li', { title: c.subject }, el('code', { text: (c.sha || '').slice(0, 8) }), c.subject))));
  }

  function renderSchedules(list) {
    const box = $('schedules');
    box.replaceChildren();
    if (!list.length) {
      box.className = 'sub muted';
      box.textContent = 'None configured ([[schedule]] in the config).';
      return;
    }
    box.className = 'sub sched';
    for (const s of list) {
      const next = parseTime(s.next);
      box.append(
        el('span', { class: 'name', title: s.cron }, s.name),
        el('span', {}, el('span', { class: 'badge' }, s.kind), ' ',
          next ? el('span', { title: next.toString() }, 'next ' + stamp(s.next) + ' (' + ago(s.next) + ')') : el('span', { class: 'muted', text: 'no next run' }),
          s.last ? el('span', { class: 'muted', text: ' · last: ' + s.last }) : null));
    }
  }

  // liveLocker is a locker's line in the running job's tally (the one
  // account of the job, from the agent), or null when no job runs or the
  // job has not reached it yet.
  function liveLocker(name) {
    const live = S.live;
    if (!live || live.ended || !live.tally) return null;
    if (live.tallyAt !== live.tally) {
      live.byName = {};
      for (const x of live.tally.lockers || []) live.byName[x.name] = x;
      live.tallyAt = live.tally;
    }
    const x = live.byName[name];
    return x && x.state !== 'pending' ? x : null;
  }

  // viewState is the one state a locker shows in the card, the map, its
  // legend and the table: the running job's tally where the job has
  // reached the locker, else the inventory.
  function viewState(l) {
    const x = liveLocker(l.name);
    if (x) return x.state;
    if (l.state === 'RUNNING') return l.health === 'unhealthy' ? 'unhealthy' : l.health === 'starting' ? 'starting' : 'up';
    // Stopped for want of connections: its held socket wakes it (not down).
    if (l.state === 'STOPPED') return l.sleeping ? 'sleeping' : 'down';
    if (l.state === 'STOPPING') return 'stopping';
    if (l.state === 'STARTING') return 'starting';
    if (l.state === 'BROKEN') return 'broken';
    return 'other';
  }

  const STATES = [
    ['up', 'up'], ['sleeping', 'sleeping (wakes on a connection)'], ['stopping', 'stopping'], ['down', 'down'], ['starting', 'starting'],
    ['failed', 'failed'], ['unhealthy', 'unhealthy'], ['broken', 'broken (LXC cannot load it)'],
  ];

  function viewCounts() {
    const c = {};
    for (const l of S.lockers) {
      const st = viewState(l);
      c[st] = (c[st] || 0) + 1;
    }
    return c;
  }

  function shortName(name) {
    // Lockers share a prefix; the tile shows the distinctive end.
    const m = name.match(/(\d+)$/);
    if (m && name.length > 8) return m[1];
    return name.length > 8 ? name.slice(-8) : name;
  }

  function renderGrid() {
    const grid = $('grid');
    const counts = {};
    const frag = document.createDocumentFragment();
    const names = new Set();
    const current = S.host && S.host.build ? S.host.build.release : '';
    let other = 0;
    for (const l of S.lockers) {
      names.add(l.name);
      const st = viewState(l);
      counts[st] = (counts[st] || 0) + 1;
      // A running locker on another release than current is marked: the
      // map tells moved lockers from those still to move.
      const off = l.state === 'RUNNING' && !!l.release && !!current && !l.on_current;
      if (off) other++;
      frag.append(el('div', { class: 'tile s-' + st + (off ? ' off' : ''), 'data-name': l.name, 'data-state': st, 'data-off': off,
        title: l.name + ': ' + st + (l.error ? ': ' + l.error : '') + (l.release ? ' on ' + l.release + (off ? ' (current is ' + current + ')' : '') : '') }, shortName(l.name)));
    }
    if (!frag.childNodes.length) frag.append(el('div', { class: 'muted', text: S.host ? 'No lockers on this host.' : 'Loading…' }));
    grid.replaceChildren(frag);
    const legend = $('legend');
    legend.replaceChildren(...STATES.map(([k, label]) =>
      el('span', { 'data-legend': k }, el('i', { class: 's-' + k }), label + ' ' + (counts[k] || 0))),
      el('span', { 'data-legend': 'off', title: 'running a release other than current' + (current ? ' (' + current + ')' : '') },
        el('i', { class: 'off' }), 'not on current ' + other));
  }

  // liveBusy: the running job has this locker down or in a step, so the
  // inventory's last health mark is stale.
  function liveBusy(l) {
    const x = liveLocker(l.name);
    return !!x && x.state !== 'up';
  }

  function renderLockers() {
    const tb = $('lockers-table').tBodies[0];
    const f = S.filter.toLowerCase();
    const rows = [];
    const current = S.host && S.host.build ? S.host.build.release : '';
    for (const l of S.lockers) {
      const hay = [l.name, l.state, l.health, l.release, l.port, (l.groups || []).join(' ')].join(' ').toLowerCase();
      if (f && !hay.includes(f)) continue;
      const running = l.state === 'RUNNING';
      const st = viewState(l);
      // The state column says what the map says: the job's state of the
      // locker, or the inventory's (an unhealthy running locker reads
      // "unhealthy" in both).
      const shown = liveLocker(l.name) || st === 'unhealthy' || st === 'starting' || st === 'sleeping' ? st : l.state.toLowerCase();
      const statePill = el('span', { class: 'pill ' + shown, 'data-view': st }, shown);
      const release = [];
      if (l.release) {
        release.push(el('code', { title: l.release }, l.release));
        if (running && current && !l.on_current) release.push(' ', el('span', { class: 'badge amber', 'data-old': '1', title: 'current is ' + current + '; this locker moves on its next restart or update' }, 'older release'));
        if (l.release_deleted) release.push(' ', el('span', { class: 'badge red', text: 'folder deleted' }));
      } else {
        release.push(el('span', { class: 'muted', text: running ? 'unknown' : '—' }));
      }
      const started = parseTime(l.started_at);
      rows.push(el('tr', { 'data-name': l.name, 'data-state': l.state, 'data-view': st },
        el('td', { class: 'name' }, l.name),
        el('td', {}, statePill),
        el('td', {}, liveBusy(l) ? el('span', { class: 'muted', text: '—' })
          : el('span', { class: 'pill ' + l.health, title: l.error || l.health_error || (l.health_at ? 'checked ' + ago(l.health_at) : '') }, l.health),
          l.error ? el('div', { class: 'sub err', 'data-error': l.name, text: l.error }) : null,
          l.quarantined ? el('div', { class: 'sub err', 'data-quarantined': l.name, text: l.quarantined }) : null),
        el('td', {}, release),
        el('td', {}, running && started ? el('span', { title: 'since ' + started.toString() }, dur(Date.now() - started.getTime())) : el('span', { class: 'muted', text: '—' })),
        el('td', {}, l.port || ''),
        el('td', {}, l.start_order || 0),
        el('td', {}, el('button', { class: 'btn small', 'data-restart': l.name, disabled: !!(S.host && S.host.running_job) || S.down || l.state === 'BROKEN', title: l.state === 'BROKEN' ? 'LXC cannot load it: fix its config first' : null, onclick: () => confirmRestart(l) }, 'Restart…'))));
    }
    if (!rows.length) rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 8, text: S.lockers.length ? 'No locker matches the filter.' : 'No lockers on this host.' })));
    tb.replaceChildren(...rows);
  }

  function jobSummary(j) {
    if (j.error) return j.error;
    try {
      const r = typeof j.result === 'string' ? JSON.parse(j.result) : j.result;
      if (r && r.summary) return r.summary;
      if (r && r.available !== undefined) return r.available ? r.behind + (r.behind === 1 ? ' commit behind ' : ' commits behind ') + r.target : 'up to date';
    } catch (e) { /* not JSON: no summary */ }
    return '';
  }

  function jobDuration(j) {
    const a = parseTime(j.created);
    const b = parseTime(j.finished) || (j.state === 'running' ? new Date() : null);
    return a && b ? dur(b - a) : '—';
  }

  function renderJobs() {
    const tb = $('jobs-table').tBodies[0];
    const rows = S.jobs.map((j) => {
      // The job on screen counts from its live tally, as its panel does.
      const live = S.live && S.live.id === j.id && S.live.tally ? S.live.tally : null;
      const p = live || j.tally || j.progress || {};
      const sum = jobSummary(j);
      return el('tr', { class: 'clickable', 'data-job': j.id, title: 'show this job', onclick: () => showJob(j.id) },
        el('td', { title: j.id }, stamp(j.created)),
        el('td', {}, el('b', {}, j.kind)),
        el('td', { class: 'muted' }, j.trigger || ''),
        el('td', {}, el('span', { class: 'pill ' + (j.state === 'running' ? 'job-running' : j.state) }, j.state)),
        el('td', {}, p.total ? p.done + '/' + p.total + (p.failed ? ' (' + p.failed + ' failed)' : '') : '—'),
        el('td', {}, jobDuration(j)),
        el('td', { class: 'summary' + (j.error && j.state !== 'cancelled' ? ' err' : ''), title: sum }, sum));
    });
    if (!rows.length) rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 7, text: 'No jobs yet.' })));
    tb.replaceChildren(...rows);
  }

  // ---------- live job ----------

  // newLive is the job on screen. Its lockers, steps, failures and
  // progress are the job's tally (job.tally), the agent's one account of
  // the job: the page reduces no event of its own, it reads the record
  // again after events (fetchTally) and renders that.
  function newLive(job) {
    return {
      id: job.id, kind: job.kind, job, state: job.state, tally: job.tally || null,
      created: parseTime(job.created) || new Date(), firstAt: 0, lastSeq: 0,
      stages: [], ended: job.state !== 'running',
      error: job.error || '', summary: '', abort: null, retries: 0, fetching: false, again: false,
    };
  }

  // fetchTally reads the job's record (and its tally) again: at most one
  // read in flight, and one more after it when events came meanwhile.
  async function fetchTally(live) {
    if (live.fetching) { live.again = true; return; }
    live.fetching = true;
    try {
      const j = await api('GET', '/v1/jobs/' + encodeURIComponent(live.id));
      if (S.live === live && !live.ended) {
        live.job = j;
        if (j.tally) live.tally = j.tally;
        scheduleRender();
      }
    } catch (e) { /* the poll shows the agent down */ }
    live.fetching = false;
    if (live.again && !live.ended) {
      live.again = false;
      setTimeout(() => fetchTally(live), 300);
    }
  }

  // progressOf is what the progress bar, its text and the history show.
  function progressOf(live) {
    const t = live.tally || live.job.progress || {};
    return { total: t.total || 0, done: t.done || 0, failed: t.failed || 0 };
  }

  function stopStream() {
    if (S.live && S.live.abort) S.live.abort.abort();
  }

  function follow(job) {
    stopStream();
    S.live = newLive(job);
    $('job-panel').hidden = false;
    stream(S.live);
  }

  async function stream(live) {
    const ctl = new AbortController();
    live.abort = ctl;
    try {
      const headers = { Authorization: 'Bearer ' + S.token, Accept: 'text/event-stream' };
      if (live.lastSeq) headers['Last-Event-ID'] = String(live.lastSeq);
      const res = await fetch('/v1/jobs/' + encodeURIComponent(live.id) + '/events', { headers, signal: ctl.signal, cache: 'no-store' });
      if (!res.ok || !res.body) throw new ApiError(res.status, 'event stream: HTTP ' + res.status);
      live.retries = 0;
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          onSSE(live, chunk);
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
    }
    if (live.ended || S.live !== live) return;
    // The stream ended without an "end" event: the agent restarted or the
    // connection dropped. Ask for the job, then resume or finish.
    live.retries++;
    setTimeout(async () => {
      if (S.live !== live || live.ended) return;
      try {
        const j = await api('GET', '/v1/jobs/' + encodeURIComponent(live.id));
        if (j.state !== 'running') { finish(live, j); return; }
      } catch (e) { /* the banner says the agent is down */ }
      stream(live);
    }, Math.min(5000, 500 * live.retries));
  }

  function onSSE(live, chunk) {
    let type = 'message';
    let data = '';
    let id = 0;
    for (const line of chunk.split('\n')) {
      if (line.startsWith(':')) continue;
      const k = line.indexOf(':');
      const field = k < 0 ? line : line.slice(0, k);
      const val = k < 0 ? '' : line.slice(k + 1).replace(/^ /, '');
      if (field === 'event') type = val;
      else if (field === 'data') data += (data ? '\n' : '') + val;
      else if (field === 'id') id = parseInt(val, 10) || 0;
    }
    if (!data) return;
    let obj;
    try { obj = JSON.parse(data); } catch (e) { return; }
    if (type === 'end') { finish(live, obj); return; }
    if (id) live.lastSeq = Math.max(live.lastSeq, id);
    apply(live, obj);
    scheduleRender();
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderHost();
      renderJobs();
      renderJob();
      renderGrid();
      renderLockers();
    });
  }

  function apply(live, e) {
    if (e.type === 'stage') {
      live.stages.push({ t: parseTime(e.time) || new Date(), stage: e.stage, msg: e.message || '', err: e.error || '' });
    } else if (e.type === 'container') {
      if (!live.firstAt) live.firstAt = Date.now();
      fetchTally(live);
    } else if (e.type === 'state') {
      live.state = e.state;
      if (e.error) live.error = e.error;
    }
  }

  function finish(live, job) {
    if (live.ended && live.job === job) return;
    live.ended = true;
    live.job = job;
    live.state = job.state;
    live.error = job.error || '';
    if (job.tally) live.tally = job.tally;
    live.summary = jobSummary(Object.assign({}, job, { error: '' }));
    if (live.abort) live.abort.abort();
    if (S.live === live) {
      render(); // every panel at once: the map leaves the tally with the job panel
      poll();
    }
  }

  // The lockers a job did not move as planned, each with its reason
  // (agent.Tally.Undone, as the CLI's tail lists them): failed, skipped,
  // or left alone because LXC cannot load it.
  function undone(t) {
    return ((t && t.lockers) || []).filter((x) => x.failed || x.outcome === 'skipped' || x.state === 'broken');
  }

  function renderJob() {
    const live = S.live;
    const panel = $('job-panel');
    if (!live) { panel.hidden = true; return; }
    panel.hidden = false;
    $('job-id').textContent = live.id;
    const req = live.job.request || {};
    let kind = live.kind;
    if (live.kind === 'update-code') kind += ' → ' + (req.target || '') + ' (' + (req.strategy || '') + ')';
    if ((req.names || []).length === 1) kind += ' ' + req.names[0];
    $('job-kind').textContent = kind;
    const stp = $('job-state');
    stp.textContent = live.state;
    stp.className = 'pill ' + (live.state === 'running' ? 'job-running' : live.state);

    // One progress: the bar, its text and the counts read the tally.
    const pr = progressOf(live);
    const total = pr.total;
    const pct = total ? Math.floor((pr.done / total) * 100) : (live.ended && live.state === 'succeeded' ? 100 : 0);
    const bar = $('job-bar');
    bar.style.width = pct + '%';
    bar.dataset.pct = pct;
    bar.className = 'bar' + (live.ended ? (live.state === 'succeeded' ? ' ok' : live.state === 'cancelled' ? ' warn' : ' bad') : pr.failed ? ' warn' : '');
    $('job-progress-text').textContent = pct + '%';
    $('job-counts').textContent = total
      ? pr.done + ' of ' + plural(total, 'locker') + ' done' + (pr.failed ? ' · ' + pr.failed + ' failed' : '')
      : (live.ended ? 'no lockers to move' : 'preparing…');
    const last = live.stages[live.stages.length - 1];
    $('job-stage').textContent = last ? last.stage + (last.msg ? ': ' + last.msg : '') : '';

    // Time: elapsed, and an estimate from the pace so far.
    const now = live.ended ? (parseTime(live.job.finished) || new Date()) : new Date();
    $('job-elapsed').textContent = (live.ended ? 'took ' : 'running for ') + dur(now - live.created);
    let eta = '';
    if (!live.ended) {
      if (total && pr.done > 0 && live.firstAt) {
        const per = (Date.now() - live.firstAt) / pr.done;
        const left = per * (total - pr.done);
        eta = '≈ ' + dur(left) + ' left · done by ' + clock(new Date(Date.now() + left));
      } else {
        eta = 'estimating…';
      }
    } else {
      eta = 'finished ' + clock(now);
    }
    $('job-eta').textContent = eta;

    $('job-cancel').hidden = live.ended;
    $('job-close').hidden = !live.ended;

    const msg = $('job-message');
    if (live.ended) {
      msg.hidden = false;
      // What serves now, from the tally, whenever the job did not simply
      // succeed (after a rollback: every locker back on the good release).
      const serving = live.tally && live.tally.serving && (live.state !== 'succeeded' || undone(live.tally).length)
        ? ' Now: ' + live.tally.serving + '.' : '';
      if (live.state === 'succeeded') {
        msg.className = 'job-message';
        msg.textContent = '✓ ' + (live.summary || 'Job succeeded.') + serving;
      } else if (live.state === 'cancelled') {
        msg.className = 'job-message warn';
        msg.textContent = 'Cancelled. ' + (live.summary || 'Nothing new was started after the cancel; lockers already in a step finished it.') + serving;
      } else {
        msg.className = 'job-message bad';
        msg.textContent = 'Job ' + live.state + ': ' + (live.error || 'see the failures below and the agent’s log (journalctl -u lxcfleet).') + serving;
      }
    } else {
      msg.hidden = true;
    }

    // Steps (canary only when the plan has canaries), from the tally: a
    // locker that failed in a step counts failed there, whatever the way
    // back did with it since.
    const wb = $('job-waves').tBodies[0];
    const rows = ((live.tally && live.tally.steps) || []).map((s) => {
      const c = s.states || {};
      const n = (k) => c[k] || 0;
      const active = n('stopping') + n('starting') + (live.ended ? 0 : n('down'));
      const failed = s.failed || 0;
      const state = s.name === 'not moved' ? n('skipped') + ' skipped'
        : failed ? (active && !live.ended ? 'running, ' + failed + ' failed' : failed + ' failed') : (active && !live.ended ? 'running' : 'done');
      return el('tr', { 'data-wave': s.name, 'data-failed': failed },
        el('td', {}, el('b', {}, s.name)),
        el('td', {}, n('stopping')), el('td', {}, n('down')), el('td', {}, n('starting')), el('td', {}, n('up')),
        el('td', { class: failed ? 'err' : '' }, failed),
        el('td', {}, el('span', { class: 'pill ' + (failed ? 'failed' : s.name === 'not moved' ? 'cancelled' : active && !live.ended ? 'job-running' : 'succeeded') }, state)));
    });
    if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: live.ended ? 'no locker was touched' : 'no locker touched yet' })));
    wb.replaceChildren(...rows);

    // Stages.
    const sl = $('job-stages');
    // Every stage (the newest 500), scrolled to the newest: a rollback at
    // the end of a long job must be in view, not below the fold.
    const atEnd = sl.scrollTop + sl.clientHeight >= sl.scrollHeight - 4;
    sl.replaceChildren(...live.stages.slice(-500).map((s) =>
      el('li', { class: s.err ? 'err' : '' }, el('span', { class: 't', text: clock(s.t) }), el('b', {}, s.stage), s.msg ? ': ' + s.msg : '', s.err ? ' — ' + s.err : '')));
    if (!live.stages.length) sl.replaceChildren(el('li', { class: 'muted', text: live.ended ? 'this job has no stages' : 'waiting for the first stage…' }));
    if (atEnd) sl.scrollTop = sl.scrollHeight;

    // Failures, and every other locker not moved as planned, with its
    // reason (I5): the tally's, as the CLI's tail prints them.
    const fl = $('job-failures');
    const un = undone(live.tally);
    const nf = un.filter((x) => x.failed).length;
    $('job-failcount').textContent = un.length ? '(' + nf + ' failed' + (un.length > nf ? ', ' + (un.length - nf) + ' not moved' : '') + ')' : '';
    if (!un.length) {
      fl.replaceChildren(el('li', { class: 'muted none', text: live.ended ? 'none' : 'none so far' }));
    } else {
      fl.replaceChildren(...un.slice(0, 200).map((x) =>
        el('li', x.failed ? { 'data-failed': x.name } : { 'data-undone': x.name }, el('b', {}, x.name), ' ',
          x.failed ? '' : el('span', { class: 'badge' }, x.outcome === 'skipped' ? 'skipped' : x.state), ' ', x.reason || x.outcome || '')));
    }
  }

  async function showJob(id) {
    try {
      const j = await api('GET', '/v1/jobs/' + encodeURIComponent(id));
      if (j.state === 'running') { follow(j); return; }
      stopStream();
      const live = newLive(j);
      S.live = live;
      try {
        const s = await api('GET', '/v1/jobs/' + encodeURIComponent(id) + '/steps');
        for (const st of (s && s.steps) || []) {
          if (!st.container) live.stages.push({ t: parseTime(st.time) || new Date(), stage: st.action, msg: st.outcome || st.release || '', err: st.error || '' });
        }
      } catch (e) { /* steps are optional */ }
      live.ended = false;
      finish(live, j);
      $('job-panel').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    } catch (err) {
      toast(explain(err), true);
    }
  }

  // ---------- operations ----------

  let confirmAction = null;

  function ask(title, body, okLabel, action, opts) {
    const d = $('confirm');
    $('confirm-title').textContent = title;
    const fields = $('confirm-fields');
    fields.replaceChildren();
    if (opts && opts.fields) fields.append(opts.fields);
    const text = $('confirm-text');
    text.replaceChildren(...(Array.isArray(body) ? body : [body]));
    const ok = $('confirm-ok');
    ok.textContent = okLabel;
    ok.className = 'btn ' + (opts && opts.danger ? 'danger' : 'primary');
    ok.disabled = false;
    confirmAction = action;
    if (opts && opts.onInput) opts.onInput();
    d.showModal();
  }

  async function onConfirm(ev) {
    ev.preventDefault();
    const action = confirmAction;
    if (!action) return;
    const ok = $('confirm-ok');
    ok.disabled = true;
    try {
      await action();
      confirmAction = null;
      $('confirm').close();
    } catch (err) {
      ok.disabled = false;
      $('confirm').close();
      if (err instanceof ApiError && err.status === 409 && err.body && err.body.job_id) {
        toast('Another job is running (' + err.body.job_id + '); showing it.', true);
        showJob(err.body.job_id);
      } else {
        toast(explain(err), true);
      }
    }
  }

  async function submit(path, body) {
    const job = await api('POST', path, Object.assign({ trigger: 'console' }, body || {}));
    toast('Started ' + job.kind + ' (' + job.id + ').');
    follow(job);
    render();
    $('job-panel').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    setTimeout(poll, 300);
    return job;
  }

  function running() { return S.lockers.filter((l) => l.state === 'RUNNING'); }
  function stopped() { return S.lockers.filter((l) => l.state !== 'RUNNING'); }

  function confirmStopAll() {
    const n = running().length;
    ask('Stop all lockers?', [
      el('p', {}, 'This stops ', el('b', {}, plural(n, 'running locker')), ' on ', el('b', {}, (S.host && S.host.hostname) || 'this host'),
        ': each gets a graceful stop (its app is asked to exit, then killed after the grace period), several at once.'),
      el('div', { class: 'warn' }, 'Their apps are DOWN until you start them again with “Start all”. Owner data (/Me) and config are not touched.'),
    ], 'Stop ' + plural(n, 'locker'), () => submit('/v1/stop-all', {}), { danger: true });
  }

  function confirmStartAll() {
    const n = stopped().length;
    ask('Start all lockers?', [
      el('p', {}, 'This starts ', el('b', {}, plural(n, 'stopped locker')), ' on the current release',
        S.host && S.host.build ? el('span', {}, ' (build ', el('b', {}, '#' + S.host.build.build), ')') : '',
        ', in bounded waves: only a few start at once, and each is waited for until it answers its health check, so the host is not hit by every startup at the same moment.'),
      el('p', { class: 'muted' }, 'Lockers already running are left as they are.'),
    ], n ? 'Start ' + plural(n, 'locker') : 'Start (nothing is stopped)', () => submit('/v1/start-all', {}));
  }

  function confirmUpdate() {
    const n = running().length;
    const u = S.host && S.host.update_check;
    const fields = el('div', { class: 'fields' },
      el('label', { for: 'f-target' }, 'Target'),
      el('input', { id: 'f-target', value: (u && u.target) || 'main', placeholder: 'branch, tag or commit' }),
      el('label', { for: 'f-strategy' }, 'Strategy'),
      el('select', { id: 'f-strategy' },
        el('option', { value: 'rolling' }, 'rolling — a few lockers at a time'),
        el('option', { value: 'offline' }, 'offline — switch, then each locker stopped just before its start')),
      el('label', { for: 'f-window' }, 'Max unavailable (K)'),
      el('input', { id: 'f-window', type: 'number', min: '1', max: '1000', placeholder: 'agent default' }),
      el('div', { class: 'hint' }, 'At most this many lockers down at once (policy knob max_unavailable; offline: the first W, the most starting at once).'),
      // Force: update to a release marked bad (the CLI's --force). Off by
      // default; checking it turns the dialog into a warning.
      el('label', { for: 'f-force' }, 'Force'),
      el('label', { class: 'check' }, el('input', { id: 'f-force', type: 'checkbox' }),
        ' update even to a release marked bad (--force)'));
    const text = () => {
      const strategy = $('f-strategy').value;
      const k = parseInt($('f-window').value, 10);
      const wave = k > 0 ? plural(k, 'locker') : 'the configured number of lockers';
      const target = $('f-target').value.trim() || 'main';
      const steps = [
        el('li', {}, 'Fetch and build ', el('code', {}, target), ' into a new release while every locker keeps serving (npm runs only if the lockfile changed). A failed build stops here and touches nothing.'),
      ];
      if (strategy === 'offline') {
        steps.push(el('li', {}, 'Switch current to the new release, then restart ', el('b', {}, 'all ' + plural(n, 'running locker')), ', ', wave, ' at a time, each stopped just before its own start (no serving capacity kept).'));
      } else {
        steps.push(el('li', {}, 'Switch current, then replace the ', plural(n, 'running locker'), ' ', wave, ' at a time (stop, start on the new release, wait healthy). Too many failures roll back by policy.'));
      }
      const out = [el('p', {}, 'This will:'), el('ol', {}, steps)];
      if (strategy === 'offline') out.push(el('div', { class: 'warn' }, 'Offline: every locker is down from its stop until its start (a maintenance page can answer meanwhile).'));
      const force = $('f-force').checked;
      const bad = u && u.target_bad && (u.target || 'main') === target ? u.target_release : '';
      if (bad && !force) {
        out.push(el('div', { class: 'warn', 'data-bad-target': bad }, 'Release ' + bad + ' is marked bad: the update is refused unless you force it.'));
      }
      if (force) {
        out.push(el('div', { class: 'warn', 'data-force': '1' }, 'Forced: the update goes ahead even if ' + (bad ? 'release ' + bad : 'the target') +
          ' is marked bad after a failed update or a rollback. Its lockers may fail again; the failure policy still applies.'));
      }
      $('confirm-text').replaceChildren(...out);
      const ok = $('confirm-ok');
      ok.textContent = (force ? 'Force update of ' : 'Update ') + plural(n, 'locker') + ' (' + strategy + ')';
      ok.className = 'btn ' + (force ? 'danger' : 'primary');
    };
    ask('Update code?', [], 'Update', () => {
      const body = { target: $('f-target').value.trim(), strategy: $('f-strategy').value };
      if ($('f-force').checked) body.force = true;
      const k = parseInt($('f-window').value, 10);
      if (k > 0) body.policy = { max_unavailable: k };
      if (!body.target) delete body.target;
      return submit('/v1/update-code', body);
    }, { fields, onInput: text });
    for (const id of ['f-target', 'f-strategy', 'f-window', 'f-force']) $(id).addEventListener('input', text);
    $('f-force').addEventListener('change', text);
  }

  async function confirmRollback() {
    let target = 'the previous good release';
    try {
      const r = await api('GET', '/v1/releases');
      const rels = (r && r.releases) || [];
      const cur = rels.find((x) => x.current);
      const prev = rels.filter((x) => !x.current && x.state !== 'bad' && (!cur || x.build_time < cur.build_time))
        .sort((a, b) => (a.build_time < b.build_time ? 1 : -1))[0];
      if (prev) target = prev.name + ' (build #' + prev.build + ')';
    } catch (e) { /* the agent picks it */ }
    const cur = S.host && S.host.build;
    const n = running().length;
    ask('Roll back?', [
      el('p', {}, 'This goes back from ', el('b', {}, cur ? cur.release + ' (build #' + cur.build + ')' : 'the current release'), ' to ', el('b', {}, target), '.'),
      el('ul', {},
        el('li', {}, 'The release being left is marked bad (updating to it again needs --force).'),
        el('li', {}, 'Current switches back at once; the ', plural(n, 'running locker'), ' move back in waves, a few down at a time.')),
    ], 'Roll back ' + plural(n, 'locker'), () => submit('/v1/rollback', {}), { danger: true });
  }

  function confirmRestart(l) {
    const b = S.host && S.host.build;
    ask('Restart ' + l.name + '?', [
      el('p', {}, 'This stops ', el('code', {}, l.name), ' gracefully, starts it again',
        b ? el('span', {}, ' on the current release (build ', el('b', {}, '#' + b.build), ')') : '',
        ' and waits until it is healthy.'),
      el('div', { class: 'warn' }, 'Its app is down for the few seconds of the restart. Other lockers are not touched.'),
    ], 'Restart ' + l.name, () => submit('/v1/containers/' + encodeURIComponent(l.name) + '/restart', {}));
  }

  function confirmCancel() {
    const live = S.live;
    if (!live || live.ended) return;
    const offline = live.kind === 'update-code' && live.job.request && live.job.request.strategy === 'offline';
    ask('Cancel job ' + live.kind + '?', [
      el('p', {}, 'Nothing new begins after the cancel; lockers already being stopped or started finish that step',
        live.kind === 'stop-all' ? ' (lockers already stopped stay stopped).' : '.'),
      offline ? el('div', { class: 'warn' }, 'An offline update still starts every locker it stopped.') : '',
    ], 'Cancel the job', async () => {
      await api('POST', '/v1/jobs/' + encodeURIComponent(live.id) + '/cancel');
      toast('Cancel requested for ' + live.id + '.');
    }, { danger: true });
  }

  async function checkUpdate() {
    try {
      const job = await api('POST', '/v1/check-update', { trigger: 'console' });
      toast('Checking the origin for updates…');
      for (let i = 0; i < 60; i++) {
        await new Promise((r) => setTimeout(r, 700));
        const j = await api('GET', '/v1/jobs/' + encodeURIComponent(job.id));
        if (j.state !== 'running') {
          if (j.state !== 'succeeded') toast('Update check ' + j.state + ': ' + (j.error || ''), true);
          break;
        }
      }
      poll();
    } catch (err) {
      toast(explain(err), true);
    }
  }

  // ---------- wiring ----------

  function init() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('btn-stop-all').addEventListener('click', confirmStopAll);
    $('btn-start-all').addEventListener('click', confirmStartAll);
    $('btn-update').addEventListener('click', confirmUpdate);
    $('btn-rollback').addEventListener('click', confirmRollback);
    $('btn-check').addEventListener('click', checkUpdate);
    $('btn-publish').addEventListener('click', confirmPublish);
    $('btn-pause').addEventListener('click', confirmPause);
    $('btn-resume').addEventListener('click', confirmResume);
    $('job-cancel').addEventListener('click', confirmCancel);
    $('job-close').addEventListener('click', () => { S.live = null; render(); });
    $('confirm-form').addEventListener('submit', onConfirm);
    $('confirm-cancel').addEventListener('click', () => { confirmAction = null; $('confirm').close(); });
    $('filter').addEventListener('input', (e) => { S.filter = e.target.value; renderLockers(); });
    // The clock-driven bits (elapsed, uptime) tick without a poll.
    setInterval(() => { if (S.live && !S.live.ended) renderJob(); }, 1000);
    window.addEventListener('error', (e) => toast(explain(e.error || new Error(e.message)), true));
    window.addEventListener('unhandledrejection', (e) => toast(explain(e.reason), true));
    if (S.token) showApp(); else showLogin('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
