import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSize } from '../../src/util/size';
import { parseHostPort } from '../../src/util/address';

test('sizes parse with binary units and reject junk', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('64K'), 65536);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('2t'), 2 * 1024 ** 4);
  for (const bad of ['', '-1', '1.5G', 'G', '1X', '99999999999P']) assert.equal(typeof parseSize(bad), 'string', bad);
});

test('HOST:PORT parses IPv4, names and bracketed IPv6', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
  assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
  for (const bad of ['127.0.0.1', ':80', 'h:70000', '::1:80']) assert.equal(typeof parseHostPort(bad), 'string', bad);
});
