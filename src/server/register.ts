// `tandem serve --register <gateway-url>`: announce this engine to a tandem gateway, keep the
// registration alive with heartbeats, withdraw it when draining.
//
// Protocol (the gateway's, src/gateway/server.ts + endpoints.ts):
//   POST /v1/endpoints/register   {url, role?, model?, kv_events_endpoint?, labels?}
//        → 200 {id, heartbeat_interval_ms, ttl_ms}; re-posting the same body is the heartbeat
//   POST /v1/endpoints/deregister {url}
// The gateway drops an endpoint that missed heartbeats for ttl_ms.

import type { Engine } from '../engine/api.ts';

export const REGISTER_PATH = '/v1/endpoints/register';
export const DEREGISTER_PATH = '/v1/endpoints/deregister';
/** until the gateway says otherwise (its default TTL is 3 s; beat at a third of it) */
export const DEFAULT_HEARTBEAT_MS = 1000;

export interface Registration {
  /** resolves after the first attempt (successful or not) */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

export interface RegistrationTarget {
  /** this engine's base URL as the gateway should reach it */
  url: string;
  engine: Engine;
  /** ZMQ address the gateway can connect to for KV events */
  kvEventsEndpoint?: string;
  /** sent as `Authorization: Bearer <key>` (the gateway's --registration-key, or one of its --api-key) */
  key?: string;
  log?: (line: string) => void;
}

export function startRegistration(gateway: string, self: RegistrationTarget): Registration {
  const base = gateway.replace(/\/+$/, '');
  const log = self.log ?? ((l: string) => console.error(l));
  const body = JSON.stringify({
    url: self.url,
    role: self.engine.info.role,
    model: self.engine.info.modelName,
    ...(self.kvEventsEndpoint ? { kv_events_endpoint: self.kvEventsEndpoint } : {}),
  });
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(self.key ? { authorization: `Bearer ${self.key}` } : {}) };
  let interval = DEFAULT_HEARTBEAT_MS;
  let failing = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const beat = async (): Promise<void> => {
    try {
      const res = await fetch(`${base}${REGISTER_PATH}`, { method: 'POST', headers, body, signal: AbortSignal.timeout(2000) });
      const text = await res.text();
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
      const asked = (JSON.parse(text) as { heartbeat_interval_ms?: unknown }).heartbeat_interval_ms;
      if (typeof asked === 'number' && asked >= 50) interval = asked;
      if (failing) log(`tandem serve: registered with ${base} again`);
      failing = false;
    } catch (err) {
      // The gateway may start after us or restart: keep beating, report once per outage.
      if (!failing) log(`tandem serve: registration with ${base} failed (${(err as Error).message}); retrying`);
      failing = true;
    }
  };
  const loop = async () => {
    await beat();
    if (!stopped) {
      timer = setTimeout(() => void loop(), interval);
      timer.unref();
    }
  };
  const ready = loop();
  return {
    ready,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await fetch(`${base}${DEREGISTER_PATH}`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ url: self.url }),
        signal: AbortSignal.timeout(2000),
      })
        .then((r) => r.arrayBuffer())
        .catch(() => {});
    },
  };
}

/** A bind address such as tcp://*:5557 → one a gateway can connect to, on `host`. */
export function connectableEndpoint(bind: string, host: string): string {
  return bind.replace(/^(tcp:\/\/)(\*|0\.0\.0\.0|\[::\])(:)/, `$1${host}$3`);
}
