'use strict';
// The lxcfleet test locker: a small real Node.js app.
//
// Environment (from lxc.environment):
//   PORT        port to listen on, on 127.0.0.1 (required)
//   LOCKER      the locker's name (reported by /healthz)
//   MODE        normal | stubborn (ignores SIGTERM) | broken (never healthy)
//               | crash (exits at once)
//   STARTUP_MS  CPU work done before listening (a real startup cost)
//   ME          owner data folder (default /Me); boot times are appended there
//   LISTEN_FDS, LISTEN_PID  a listening socket passed at fd 3 (systemd's
//               convention; lxcfleet's held sockets): the app listens on it
//               instead of binding PORT, and stops gracefully (finishes
//               what it accepted; what waits in the queue is the next
//               instance's)
const fs = require('fs');
const http = require('http');
const path = require('path');
const ms = require('ms'); // a real dependency, installed by npm

const bootedAt = Date.now();
const mode = process.env.MODE || 'normal';
const port = Number(process.env.PORT);
const me = process.env.ME || '/Me';

if (mode === 'crash') {
  console.error('crash mode: exiting');
  process.exit(3);
}

function readBuild() {
  try {
    const b = JSON.parse(fs.readFileSync(path.join(__dirname, 'BUILD.json'), 'utf8'));
    return { build: b.build, sha: b.sha || b.short || '' };
  } catch (e) {
    return { build: 'dev', sha: '' };
  }
}
const build = readBuild();

// Startup cost: spin the CPU, as a real app loading its code would.
const spinUntil = Date.now() + Number(process.env.STARTUP_MS || 0);
let spins = 0;
while (Date.now() < spinUntil) spins++;

let readyAt = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/healthz' || req.url === '/') {
    const body = {
      locker: process.env.LOCKER || '',
      build: build.build,
      sha: build.sha,
      pid: process.pid,
      bootedAt,
      readyAt,
      uptime: ms(Date.now() - bootedAt),
    };
    res.writeHead(mode === 'broken' ? 503 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
    return;
  }
  res.writeHead(404);
  res.end();
});

// A socket passed by the host (sd_listen_fds(3)): listen on fd 3.
const held = Number(process.env.LISTEN_FDS) > 0 && Number(process.env.LISTEN_PID) === process.pid;
server.listen(held ? { fd: 3 } : { port, host: '127.0.0.1' }, () => {
  readyAt = Date.now();
  try {
    fs.appendFileSync(path.join(me, 'boots.log'), `${bootedAt} ${readyAt} ${build.build}\n`);
  } catch (e) {
    // no /Me mounted: fine for the foundation tests
  }
});

function halt() {
  if (mode === 'stubborn') return; // ignores the halt signal
  if (held) {
    // Graceful: stop accepting (close this copy of the socket; the host
    // keeps it, and what queues is the next instance's), finish the
    // requests in flight, then exit.
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
    return;
  }
  server.close();
  process.exit(0);
}
process.on('SIGTERM', halt);
process.on('SIGINT', halt);
