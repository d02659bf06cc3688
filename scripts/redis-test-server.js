#!/usr/bin/env node
// A throwaway Redis for tests, benchmarks and .ci/run: Debian's redis-server on a free loopback port,
// no persistence, run as our child so it dies with us. Installs the package with apt-get when the
// binary is missing (there is no systemd here, so nothing else would start it).
//
//   import { startRedis } from '../../scripts/redis-test-server.js';
//   const redis = await startRedis();          // { url, port, stop() }
//   ... await redis.stop();
//
// As a script it prints REDIS_URL=redis://127.0.0.1:<port> and runs until SIGINT/SIGTERM.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

function hasRedisServer() {
  return spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status === 0;
}

function aptInstall() {
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'redis-server'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  let r = install();
  if (r.status !== 0) {
    // A fresh image often has no package lists yet.
    spawnSync('apt-get', ['update'], { stdio: 'ignore' });
    r = install();
  }
  if (r.status !== 0 || !hasRedisServer()) {
    throw new Error(`redis-server is missing and 'apt-get install redis-server' failed: ${r.stderr?.toString().trim().split('\n').pop() ?? ''}`);
  }
}

let installed = false;
export function ensureRedisServer() {
  if (installed || hasRedisServer()) {
    installed = true;
    return;
  }
  aptInstall();
  installed = true;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** One PING over a raw socket; resolves true on +PONG. */
export function ping(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Start redis-server on 127.0.0.1. `port` pins the port (e.g. to restart a killed server where clients
 * expect it); by default a free one is picked. DEBUG is enabled for local clients so fault tests can
 * use DEBUG SLEEP.
 * @param {{port?: number, readyTimeoutMs?: number}} [opts]
 * @returns {Promise<{url: string, port: number, pid: number, stop(): Promise<void>, kill(signal?: NodeJS.Signals): Promise<void>}>}
 */
export async function startRedis(opts = {}) {
  ensureRedisServer();
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const dir = mkdtempSync(join(tmpdir(), 'tandem-redis-'));
    const child = spawn(
      'redis-server',
      [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no',
        '--dir', dir, '--enable-debug-command', 'local', '--loglevel', 'warning',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d.toString()));
    let exited = false;
    const exitP = new Promise((resolve) => child.once('exit', () => ((exited = true), resolve())));
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);

    const deadline = Date.now() + readyTimeoutMs;
    let ready = false;
    while (!exited && Date.now() < deadline) {
      if (await ping(port)) {
        ready = true;
        break;
      }
      await sleep(25);
    }
    const stopWith = async (signal) => {
      process.removeListener('exit', killOnExit);
      if (!exited) {
        child.kill(signal);
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exitP;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    };
    if (ready) {
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        pid: child.pid,
        stop: () => stopWith('SIGTERM'),
        /** Abrupt death (fault tests): SIGKILL by default. */
        kill: (signal = 'SIGKILL') => stopWith(signal),
      };
    }
    await stopWith('SIGKILL');
    // A random port can be taken between probing and binding; retry a few times unless pinned.
    if (opts.port !== undefined || attempt >= 3) {
      throw new Error(`redis-server did not answer PING on 127.0.0.1:${port}: ${stderr.trim() || 'no output'}`);
    }
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = process.argv[2] ? Number(process.argv[2]) : undefined;
  const redis = await startRedis({ port });
  console.log(`REDIS_URL=${redis.url}`);
  const stop = async () => {
    await redis.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  setInterval(() => {}, 1 << 30);
}
