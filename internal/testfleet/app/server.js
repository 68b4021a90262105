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

server.listen(port, '127.0.0.1', () => {
  readyAt = Date.now();
  try {
    fs.appendFileSync(path.join(me, 'boots.log'), `${bootedAt} ${readyAt} ${build.build}\n`);
  } catch (e) {
    // no /Me mounted: fine for the foundation tests
  }
});

function halt() {
  if (mode === 'stubborn') return; // ignores the halt signal
  server.close();
  process.exit(0);
}
process.on('SIGTERM', halt);
process.on('SIGINT', halt);
