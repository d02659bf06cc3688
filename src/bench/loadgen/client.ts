// One streamed request, timed the way vLLM's request functions time it, over node:http with
// keep-alive. (undici's body stream delivered some SSE events late in batches — see
// src/bench/serve-util.ts — which shows up as doubled inter-token gaps; node:http hands each TCP
// read to us as it arrives.)
//
// Timing: TTFT at the first chunk carrying content (text, or a chat delta's content); every later
// content chunk adds one inter-chunk gap; E2EL ends at the last content chunk. Chunks without
// content (a chat role preamble, a finish-only chunk, the usage chunk) are not tokens and are not
// timed. A request fails on a non-2xx status, an SSE error event, a stream that ends before
// [DONE] or before any content, or a connection error.
import http from 'node:http';
import https from 'node:https';
import type { RequestRecord, RouteInfo } from './metrics.ts';

export interface StreamRequest {
  /** absolute URL of the endpoint, e.g. http://host:8000/v1/completions */
  url: URL;
  body: Record<string, unknown>;
  /** tokens the prompt has, when known (token-id prompts) */
  promptLen: number;
  signal?: AbortSignal;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 }),
  https: new https.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 }),
};

interface Chunk {
  choices?: { text?: unknown; delta?: { content?: unknown; reasoning_content?: unknown } }[];
  usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } | null;
  error?: { message?: unknown } | string;
}

/** Sends the request; never rejects — a failure is a record with success false and its error. */
export function streamRequest(req: StreamRequest, runStart: number): Promise<RequestRecord> {
  const t0 = performance.now();
  const rec: RequestRecord = {
    success: false,
    error: '',
    startTime: (t0 - runStart) / 1000,
    queueTime: 0,
    ttft: 0,
    itl: [],
    latency: 0,
    promptLen: req.promptLen,
    outputTokens: 0,
    route: null,
  };
  const body = JSON.stringify(req.body);
  const mod = req.url.protocol === 'https:' ? https : http;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error: string) => {
      if (settled) return;
      settled = true;
      req.signal?.removeEventListener('abort', onAbort);
      rec.error = error;
      rec.success = error === '';
      resolve(rec);
    };
    const onAbort = () => {
      finish('aborted');
      r.destroy();
    };
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    if (process.env.OPENAI_API_KEY) headers.authorization = `Bearer ${process.env.OPENAI_API_KEY}`;
    const r = mod.request(
      req.url,
      { method: 'POST', agent: req.url.protocol === 'https:' ? agents.https : agents.http, headers },
      (res) => {
        rec.route = routeOf(res.headers);
        res.setEncoding('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          let text = '';
          res.on('data', (d: string) => {
            if (text.length < 2000) text += d;
          });
          res.on('end', () => finish(`HTTP ${status}: ${errorMessage(text) ?? res.statusMessage ?? ''}`.trimEnd()));
          res.on('error', (e) => finish(`HTTP ${status}: ${e.message}`));
          return;
        }
        let buf = '';
        let last = t0;
        let chunks = 0;
        let usageOut: number | undefined;
        let done = false;
        let failure = '';
        const onEvent = (ev: string, now: number) => {
          let data = '';
          for (const line of ev.split('\n')) {
            if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(line[5] === ' ' ? 6 : 5);
          }
          if (!data) return; // comments (":ping"), event names without data
          if (data === '[DONE]') {
            done = true;
            return;
          }
          let j: Chunk;
          try {
            j = JSON.parse(data) as Chunk;
          } catch {
            failure ||= `malformed SSE data: ${data.slice(0, 200)}`;
            return;
          }
          if (j.error !== undefined) {
            failure ||= `stream error: ${typeof j.error === 'string' ? j.error : String(j.error.message ?? JSON.stringify(j.error))}`;
            return;
          }
          const c = j.choices?.[0];
          if (c) {
            const content = c.text ?? c.delta?.content ?? c.delta?.reasoning_content;
            if (typeof content === 'string' && content !== '') {
              if (chunks === 0) rec.ttft = (now - t0) / 1000;
              else rec.itl.push((now - last) / 1000);
              last = now;
              chunks++;
            }
          }
          if (j.usage && typeof j.usage === 'object') {
            if (typeof j.usage.completion_tokens === 'number') usageOut = j.usage.completion_tokens;
            if (typeof j.usage.prompt_tokens === 'number') rec.promptLen = j.usage.prompt_tokens;
          }
        };
        res.on('data', (d: string) => {
          const now = performance.now();
          buf += d;
          let i: number;
          // SSE events end with a blank line; tolerate CRLF framing
          if (buf.includes('\r')) buf = buf.replace(/\r\n?/g, '\n');
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            onEvent(ev, now);
          }
        });
        res.on('end', () => {
          if (buf.trim()) onEvent(buf, performance.now());
          rec.latency = (last - t0) / 1000;
          rec.outputTokens = usageOut ?? chunks;
          if (failure) return finish(failure);
          if (!done) return finish(chunks ? `stream ended before [DONE] after ${chunks} chunks` : 'stream ended before [DONE] with no content');
          if (!chunks) return finish('no content chunk received (cannot measure TTFT)');
          finish('');
        });
        res.on('error', (e) => finish(`stream broken after ${chunks} chunks: ${e.message}`));
        res.on('aborted', () => finish(`stream aborted by the server after ${chunks} chunks`));
      },
    );
    r.on('error', (e: Error & { code?: string }) => finish(`${e.code ?? 'error'}: ${e.message}`));
    if (req.signal) {
      if (req.signal.aborted) return onAbort();
      req.signal.addEventListener('abort', onAbort, { once: true });
    }
    r.end(body);
  });
}

function routeOf(h: http.IncomingHttpHeaders): RouteInfo | null {
  const one = (k: string) => {
    const v = h[k];
    return Array.isArray(v) ? v[0] : v;
  };
  const route = one('x-tandem-route');
  if (route === undefined) return null;
  const out: RouteInfo = { route };
  const p = one('x-tandem-prefill-endpoint');
  const d = one('x-tandem-decode-endpoint');
  const why = one('x-tandem-decision');
  if (p !== undefined) out.prefill = p;
  if (d !== undefined) out.decode = d;
  if (why !== undefined) out.decision = why;
  return out;
}

/** The message of an OpenAI-style error body, if it is one. */
function errorMessage(text: string): string | undefined {
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    if (typeof j.error === 'string') return j.error;
    if (j.error && typeof j.error.message === 'string') return j.error.message;
    if (typeof j.message === 'string') return j.message;
  } catch {
    /* not JSON */
  }
  return text.trim().slice(0, 300) || undefined;
}

/** GET a JSON document (e.g. /v1/models). */
export function getJson(url: URL, signal?: AbortSignal): Promise<unknown> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const r = mod.get(url, { agent: url.protocol === 'https:' ? agents.https : agents.http, signal }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        if ((res.statusCode ?? 0) >= 300) return reject(new Error(`GET ${url.pathname}: HTTP ${res.statusCode}: ${errorMessage(text) ?? ''}`));
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new Error(`GET ${url.pathname}: not JSON: ${text.slice(0, 200)}`));
        }
      });
      res.on('error', reject);
    });
    r.on('error', (e) => reject(new Error(`GET ${url.href}: ${e.message}`)));
  });
}
