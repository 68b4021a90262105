// A root postinstall that generates code, as code generators do: it
// writes generated.txt from gen-input.txt, and patches a dependency in
// place (as patch-package does) to prove a release's node_modules is its
// own.
'use strict';
const fs = require('fs');
fs.writeFileSync('generated.txt', 'generated from ' + fs.readFileSync('gen-input.txt', 'utf8'));
fs.appendFileSync('node_modules/is-number/index.js', '\n// patched by ' + fs.readFileSync('gen-input.txt', 'utf8').trim() + '\n');
