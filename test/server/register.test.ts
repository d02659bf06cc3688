// `--register`: registration, heartbeats at the interval the gateway asks for, deregistration, and
// retrying while the gateway is down. The gateway here is a real HTTP server recording what it gets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connectableEndpoint, startRegistration } from '../../src/server/register.ts';
import { FakeEngine } from './fake-engine.ts';

interface Seen {
  path: string;
  body: any;
}

function gateway(seen: Seen[], port = 0): Promise<Server> {
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      seen.push({ path: req.url!, body: JSON.parse(raw) });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.url === '/v1/endpoints/register' ? { id: 'x', heartbeat_interval_ms: 50, ttl_ms: 150 } : { removed: true }));
    });
  });
  return new Promise((r) => server.listen(port, '127.0.0.1', () => r(server)));
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('registers, heartbeats at the gateway’s interval, deregisters on stop', async () => {
  const seen: Seen[] = [];
  const gw = await gateway(seen);
  const base = `http://127.0.0.1:${(gw.address() as AddressInfo).port}`;
  try {
    const reg = startRegistration(base + '/', { url: 'http://127.0.0.1:8123', engine: new FakeEngine(), kvEventsEndpoint: 'tcp://127.0.0.1:5557', log: () => {} });
    await reg.ready;
    assert.deepEqual(seen[0], {
      path: '/v1/endpoints/register',
      body: { url: 'http://127.0.0.1:8123', role: 'both', model: 'fake-echo', kv_events_endpoint: 'tcp://127.0.0.1:5557' },
    });
    // 50 ms asked for: several beats arrive well within the 10 s bound of `until`
    await until(() => seen.length >= 4, 'heartbeats');
    await reg.stop();
    const last = seen.at(-1)!;
    assert.deepEqual(last, { path: '/v1/endpoints/deregister', body: { url: 'http://127.0.0.1:8123' } });
    const n = seen.length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(seen.length, n, 'no heartbeats after stop');
  } finally {
    gw.close();
  }
});

test('keeps retrying while the gateway is down, logs once, registers when it comes up', async () => {
  // find a free port, then leave it closed
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const logs: string[] = [];
  const reg = startRegistration(`http://127.0.0.1:${port}`, { url: 'http://127.0.0.1:8124', engine: new FakeEngine(), log: (l) => logs.push(l) });
  await reg.ready;
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, /registration with .* failed/);
  const seen: Seen[] = [];
  const gw = await gateway(seen, port);
  try {
    await until(() => seen.length >= 1, 'registration after the gateway came up');
    assert.equal(seen[0]!.body.url, 'http://127.0.0.1:8124');
    await until(() => logs.length === 2, 'the recovery log line');
    assert.match(logs[1]!, /registered with .* again/);
    await reg.stop();
  } finally {
    gw.close();
  }
});

test('wildcard KV event binds become connectable addresses', () => {
  assert.equal(connectableEndpoint('tcp://*:5557', '10.0.0.7'), 'tcp://10.0.0.7:5557');
  assert.equal(connectableEndpoint('tcp://0.0.0.0:5557', '127.0.0.1'), 'tcp://127.0.0.1:5557');
  assert.equal(connectableEndpoint('tcp://192.168.1.2:5557', '127.0.0.1'), 'tcp://192.168.1.2:5557');
});
