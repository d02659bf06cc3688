// A small vLLM-shaped HTTP server for tests of pure proxy mechanics (relaying, P/D leg shapes,
// failover, header plumbing). It is NOT a model: scheduling decisions about real prompts are tested
// against real tandem engines in e2e.test.ts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
  aborted: boolean;
  finished: boolean;
}

export type FailMode = 'none' | 'refuse' | 'status500' | 'dieMidStream' | 'hang' | 'dieBeforeBody';

export interface FakeEngineOptions {
  model?: string;
  role?: 'prefill' | 'decode' | 'both';
  tokenize?: boolean;
  chunks?: number;
  chunkDelayMs?: number;
  waiting?: number;
  kvUsage?: number;
}

export class FakeEngine {
  readonly server: Server;
  readonly requests: Recorded[] = [];
  fail: FailMode = 'none';
  healthy = true;
  /** like a SIGSTOPped process: nothing is answered and streams pause (until set back to false) */
  stalled = false;
  opts: Required<FakeEngineOptions>;
  port = 0;

  constructor(opts: FakeEngineOptions = {}) {
    this.opts = { model: 'fake', role: 'both', tokenize: false, chunks: 3, chunkDelayMs: 5, waiting: 0, kvUsage: 0, ...opts };
    this.server = createServer((req, res) => this.handle(req, res));
  }

  async start(port = 0): Promise<this> {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', () => r()));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  inference(): Recorded[] {
    return this.requests.filter((r) => r.path.startsWith('/v1/') && r.path.endsWith('completions'));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (this.stalled) return;
      const path = req.url ?? '/';
      if (path === '/health') {
        res.writeHead(this.healthy ? 200 : 503).end();
        return;
      }
      if (path === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data: [{ id: this.opts.model, object: 'model', tandem: { role: this.opts.role, block_size: 16 } }] }));
        return;
      }
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(
          `# HELP vllm:num_requests_waiting x\nvllm:num_requests_waiting{model_name="${this.opts.model}"} ${this.opts.waiting}\n` +
            `vllm:num_requests_running{model_name="${this.opts.model}"} 0\nvllm:kv_cache_usage_perc{model_name="${this.opts.model}"} ${this.opts.kvUsage}\n` +
            `vllm:cache_config_info{block_size="16",num_gpu_blocks="1024"} 1\ntandem:engine_info{role="${this.opts.role}"} 1\n`,
        );
        return;
      }
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        res.writeHead(400).end('bad json');
        return;
      }
      if (path === '/tokenize') {
        if (!this.opts.tokenize) {
          res.writeHead(404).end();
          return;
        }
        const text = typeof body.prompt === 'string' ? body.prompt : JSON.stringify(body.messages);
        // one "token" per word: deterministic, and different from the 4-bytes-per-token estimate
        const tokens = text.split(/\s+/).filter(Boolean).map((w) => w.length);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ tokens, count: tokens.length, max_model_len: 4096 }));
        return;
      }
      const rec: Recorded = { path, headers: req.headers, body, aborted: false, finished: false };
      this.requests.push(rec);
      res.on('finish', () => (rec.finished = true));
      res.on('close', () => {
        if (!res.writableFinished) rec.aborted = true;
      });
      this.answer(rec, res);
    });
  }

  private answer(rec: Recorded, res: ServerResponse): void {
    const id = String(rec.headers['x-request-id'] ?? '');
    const reqId = { 'x-request-id': id };
    if (this.fail === 'refuse') {
      res.socket?.destroy();
      return;
    }
    if (this.fail === 'status500') {
      res.writeHead(500, { 'content-type': 'application/json', ...reqId });
      res.end(JSON.stringify({ error: { message: 'boom', type: 'server_error', param: null, code: 500 } }));
      return;
    }
    if (this.fail === 'hang') return;
    const kvp = rec.body.kv_transfer_params as Record<string, unknown> | undefined;
    if (kvp?.do_remote_decode) {
      res.writeHead(200, { 'content-type': 'application/json', ...reqId });
      res.end(
        JSON.stringify({
          id: `cmpl-${id}`,
          object: 'text_completion',
          choices: [{ index: 0, text: 'x', finish_reason: 'length' }],
          usage: { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11, prompt_tokens_details: { cached_tokens: 7 } },
          kv_transfer_params: { do_remote_prefill: true, do_remote_decode: false, remote_block_ids: [1, 2], remote_engine_id: `engine-${this.port}`, remote_request_id: id, remote_host: '127.0.0.1', remote_port: this.port, tp_size: 1 },
        }),
      );
      return;
    }
    const chat = rec.path.includes('chat');
    if (rec.body.stream !== true) {
      if (this.fail === 'dieBeforeBody') {
        res.socket?.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', ...reqId });
      const choice = chat ? { index: 0, message: { role: 'assistant', content: 'hello world' }, finish_reason: 'stop' } : { index: 0, text: 'hello world', finish_reason: 'stop' };
      res.end(JSON.stringify({ id: `cmpl-${id}`, object: chat ? 'chat.completion' : 'text_completion', model: this.opts.model, choices: [choice], usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12, prompt_tokens_details: { cached_tokens: 0 } } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', ...reqId });
    if (this.fail === 'dieBeforeBody') {
      res.flushHeaders();
      setTimeout(() => res.socket?.destroy(), 5);
      return;
    }
    let i = 0;
    const n = this.opts.chunks;
    const tick = () => {
      if (res.destroyed) return;
      if (this.stalled) {
        setTimeout(tick, this.opts.chunkDelayMs);
        return;
      }
      if (this.fail === 'dieMidStream' && i === 2) {
        res.socket?.destroy();
        return;
      }
      if (i < n) {
        const delta = chat ? { choices: [{ index: 0, delta: { content: `t${i} ` }, finish_reason: null }] } : { choices: [{ index: 0, text: `t${i} `, finish_reason: null }] };
        res.write(`data: ${JSON.stringify({ id: `cmpl-${id}`, object: chat ? 'chat.completion.chunk' : 'text_completion', model: this.opts.model, ...delta })}\n\n`);
        i++;
        setTimeout(tick, this.opts.chunkDelayMs);
        return;
      }
      const so = rec.body.stream_options as { include_usage?: boolean } | undefined;
      if (so?.include_usage) {
        res.write(`data: ${JSON.stringify({ id: `cmpl-${id}`, choices: [], usage: { prompt_tokens: 10, completion_tokens: n, total_tokens: 10 + n, prompt_tokens_details: { cached_tokens: 0 } } })}\n\n`);
      }
      res.end('data: [DONE]\n\n');
    };
    tick();
  }
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}
