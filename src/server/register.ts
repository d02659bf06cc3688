// `tandem serve --register <gateway-url>`: announce this engine to a tandem gateway and keep the
// registration alive with heartbeats; withdraw it when draining.
//
// TODO(gateway): the registration protocol belongs to the gateway (docs/gateway.md). Until that
// document exists this follows the body the gateway's parser accepts (src/gateway/endpoints.ts:
// {url, role?, labels?, kv_events_endpoint?, model?}) on the paths below; adjust them to the doc.

import type { Engine } from '../engine/api.ts';

export const REGISTER_PATH = '/admin/endpoints';
/** the gateway drops a registration after ~3 s without a heartbeat; beat well inside that */
export const HEARTBEAT_MS = 1000;

export interface Registration {
  stop(): Promise<void>;
}

export function startRegistration(gateway: string, self: { url: string; engine: Engine; kvPort?: number; kvEventsEndpoint?: string }): Registration {
  const base = gateway.replace(/\/+$/, '');
  const body = JSON.stringify({
    url: self.url,
    role: self.engine.info.role,
    model: self.engine.info.modelName,
    ...(self.kvEventsEndpoint ? { kv_events_endpoint: self.kvEventsEndpoint } : {}),
  });
  let warned = false;
  const beat = async () => {
    try {
      const res = await fetch(`${base}${REGISTER_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      warned = false;
    } catch (err) {
      // The gateway may start after us or restart: keep beating, report once per outage.
      if (!warned) console.error(`tandem serve: registration with ${base} failed (${(err as Error).message}); retrying`);
      warned = true;
    }
  };
  void beat();
  const timer = setInterval(() => void beat(), HEARTBEAT_MS);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await fetch(`${base}${REGISTER_PATH}?url=${encodeURIComponent(self.url)}`, { method: 'DELETE', signal: AbortSignal.timeout(2000) })
        .then((r) => r.arrayBuffer())
        .catch(() => {});
    },
  };
}
