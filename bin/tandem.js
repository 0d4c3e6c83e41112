#!/usr/bin/env node
'use strict';
let main;
try {
  ({ main } = require('../dist/src/cli/main.js'));
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND') {
    process.stderr.write('tandem: not built yet: run `npm install` in the repository first\n');
    process.exit(1);
  }
  throw e;
}
main(process.argv.slice(2)).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (e) => { process.stderr.write(`tandem: ${e && e.stack ? e.stack : e}\n`); process.exit(70); },
);
