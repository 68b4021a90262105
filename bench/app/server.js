'use strict';
// The lxcfleet benchmark locker: a Node.js app whose startup costs real CPU.
// It loads a real dependency set (express, and whatever the build adds),
// then does a fixed amount of CPU work (WORK rounds of hashing) before it
// listens, the way a real app compiles templates or warms caches.
//
// Environment (from lxc.environment):
//   PORT  port to listen on, on 127.0.0.1
//   WORK  startup work in thousands of sha256 rounds (default 40)
//   APP_PROFILE  "light" (the default: WORK only) or "heavy": before WORK,
//         the app warms a cache of HEAVY_MB MiB (default 192) and, holding
//         it, compiles and renders HEAVY_TEMPLATES generated templates
//         (default 3000); then it drops both and runs a full garbage
//         collection, so that it serves on a small heap. Its startup peak
//         is the cache plus the templates; its serving memory is the light
//         app's.
//   LISTEN_FDS, LISTEN_PID  a listening socket passed at fd 3 (systemd's
//         convention; lxcfleet's held sockets): the app listens on it
//         instead of binding PORT, and stops gracefully.
//
// GET /healthz answers {"build": <contents of BENCH_BUILD>, ...}.
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const express = require('express');

const build = fs.readFileSync(path.join(__dirname, 'BENCH_BUILD'), 'utf8').trim();
let extra = [];
try {
  extra = JSON.parse(fs.readFileSync(path.join(__dirname, 'EXTRA_DEPS.json'), 'utf8'));
} catch (e) {
  // build A has no extra dependencies
}
for (const dep of extra) require(dep);

const heavyOut = process.env.APP_PROFILE === 'heavy' ? heavyStart() : 0;

let h = Buffer.alloc(32);
const rounds = Number(process.env.WORK || 40) * 1000;
for (let i = 0; i < rounds; i++) h = crypto.createHash('sha256').update(h).digest();
const digest = h.toString('hex').slice(0, 12);

const app = express();
app.get('/healthz', (req, res) => {
  res.json({ build, digest, pid: process.pid, heavy: heavyOut });
});
// A socket passed by the host (sd_listen_fds(3)): listen on fd 3.
const held = Number(process.env.LISTEN_FDS) > 0 && Number(process.env.LISTEN_PID) === process.pid;
const server = held ? app.listen({ fd: 3 }) : app.listen(Number(process.env.PORT), '127.0.0.1');
server.keepAliveTimeout = 60000;

// heavyStart is the heavy profile's startup: a warmed cache (every page
// written, so it is resident) held while templates are generated, compiled
// and rendered, then dropped and collected. The cache and the templates
// live only in the frames of warmCache and renderTemplates, which have
// returned when the collection runs.
function heavyStart() {
  const out = renderTemplates(warmCache(Number(process.env.HEAVY_MB || 192)), Number(process.env.HEAVY_TEMPLATES || 300));
  const v8 = require('v8');
  v8.setFlagsFromString('--expose-gc');
  const gc = require('vm').runInNewContext('gc');
  gc();
  gc();
  return out;
}

// warmCache returns mb MiB of buffers, every page written. 32 MiB chunks
// are above glibc's largest mmap threshold: each is its own mapping and
// goes back to the kernel when it is freed.
function warmCache(mb) {
  const chunk = 32 << 20;
  const cache = [];
  for (let left = mb << 20; left > 0; left -= chunk) {
    const b = Buffer.allocUnsafeSlow(Math.min(chunk, left));
    crypto.randomFillSync(b.subarray(0, 4096));
    for (let off = 4096; off < b.length; off *= 2) b.copy(b, off, 0, Math.min(off, b.length - off));
    cache.push(b);
  }
  return cache;
}

// renderTemplates generates n templates, compiles each and renders it
// 100 times from the cache's data, and returns the length rendered.
function renderTemplates(cache, n) {
  let out = 0;
  for (let t = 0; t < n; t++) {
    const parts = [];
    for (let i = 0; i < 40; i++) parts.push(`<li class="c${t}-${i}">' + esc(d.f${i % 4}) + ' #${i} ' + (d.n * ${i + t}) + '</li>`);
    const fn = new Function('d', `var esc = function (v) { return String(v).replace(/[<>&]/g, ''); }; return '<ul id="t${t}">${parts.join('')}</ul>';`);
    for (let r = 0; r < 100; r++) {
      const c = cache.length ? cache[(t + r) % cache.length] : Buffer.alloc(8);
      out += fn({ n: r, f0: c[r], f1: c[t], f2: 'x', f3: 'y' }).length;
    }
  }
  return out;
}

function halt() {
  if (held) {
    // Graceful: stop accepting (the host keeps the socket; what queues is
    // the next instance's), finish what was accepted, then exit.
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
    return;
  }
  process.exit(0);
}
process.on('SIGTERM', halt);
process.on('SIGINT', halt);
