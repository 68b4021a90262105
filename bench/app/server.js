'use strict';
// The lxcfleet benchmark locker: a Node.js app whose startup costs real CPU.
// It loads a real dependency set (express, and whatever the build adds),
// then does a fixed amount of CPU work (WORK rounds of hashing) before it
// listens, the way a real app compiles templates or warms caches.
//
// Environment (from lxc.environment):
//   PORT  port to listen on, on 127.0.0.1
//   WORK  startup work in thousands of sha256 rounds (default 40)
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

let h = Buffer.alloc(32);
const rounds = Number(process.env.WORK || 40) * 1000;
for (let i = 0; i < rounds; i++) h = crypto.createHash('sha256').update(h).digest();
const digest = h.toString('hex').slice(0, 12);

const app = express();
app.get('/healthz', (req, res) => {
  res.json({ build, digest, pid: process.pid });
});
const server = app.listen(Number(process.env.PORT), '127.0.0.1');
server.keepAliveTimeout = 60000;

function halt() {
  process.exit(0);
}
process.on('SIGTERM', halt);
process.on('SIGINT', halt);
