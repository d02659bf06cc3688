#!/usr/bin/env node
// Runs every test file under test/ with node's test runner (through tsx) and prints the
// plain "N passed, N failed" line that CI reads. Pass file or folder filters as arguments.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}
const filters = process.argv.slice(2);
let files = collect(join(root, 'test')).sort();
if (filters.length) files = files.filter((f) => filters.some((x) => relative(root, f).includes(x)));
const child = spawn(process.execPath, [
  '--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', ...files,
], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let passed = 0, failed = 0, buf = '';
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  buf += d.toString();
});
child.on('close', (code) => {
  const p = /ℹ pass (\d+)/.exec(buf); const f = /ℹ fail (\d+)/.exec(buf);
  passed = p ? Number(p[1]) : 0; failed = f ? Number(f[1]) : 0;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code ?? 1);
});
