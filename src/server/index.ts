// tandem's OpenAI-compatible HTTP server: vLLM's routes, shapes and error bodies on raw node:http,
// in front of an Engine (src/engine/api.ts). The server owns HTTP concerns only: body limits,
// validation, auth, chat templating, SSE, disconnect → abort; scheduling is the engine's.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Registry } from 'prom-client';
import type { Engine } from '../engine/api.ts';
import { ApiError } from './errors.ts';
import { parseJsonObject, readBody, sendError, sendJson } from './http.ts';
import { ChatTemplate } from './chat.ts';
import { Fields, checkTokenIds } from './fields.ts';
import { type ServedModel, chatPrompt, checkModel, completionPrompt, parseChatRequest, parseCompletionRequest } from './protocol.ts';
import { runGeneration } from './generate.ts';

export { ApiError } from './errors.ts';
export { ChatTemplate, DEFAULT_CHAT_TEMPLATE, parseMessages, type ChatMessage } from './chat.ts';

export interface HttpServerOptions {
  /** bodies larger than this get 413 (default for `tandem serve`: 4 MiB) */
  maxBodyBytes: number;
  /** when set, /v1/* requires `Authorization: Bearer <apiKey>` (as vLLM's --api-key) */
  apiKey?: string;
  /** served as text at GET /metrics (the engine's vllm:* metrics) */
  metricsRegistry: Registry;
  /** `root` in /v1/models: what the model was loaded from (default: the served name) */
  modelRoot?: string;
  /** the KV transfer port, advertised in /v1/models for P/D routers */
  kvPort?: number;
  /** where 500s are reported (default: console.error) */
  log?: (message: string) => void;
}

export interface OpenAIServer extends Server {
  /** true once startDraining() was called: /health answers 503 and new generations are refused */
  readonly draining: boolean;
  /** Stop admitting: /health → 503, generation routes → 503; requests in flight continue. */
  startDraining(): void;
}

const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

type Handler = (req: IncomingMessage, res: ServerResponse, rc: RequestContext) => Promise<void> | void;

interface RequestContext {
  arrivalTime: number;
  clientRequestId?: string;
}

export function createHttpServer(engine: Engine, opts: HttpServerOptions): OpenAIServer {
  const info = engine.info;
  const tok = engine.tokenizer;
  const served: ServedModel = {
    name: info.modelName,
    maxModelLen: info.maxModelLen,
    tokenizer: tok,
    chatTemplate: new ChatTemplate(engine.chatTemplate, { bos_token: tok.piece(tok.bos), eos_token: tok.piece(tok.eos) }),
  };
  const startedAt = Math.floor(Date.now() / 1000);
  const log = opts.log ?? ((m: string) => console.error(m));
  let draining = false;

  const readJson = async (req: IncomingMessage) => parseJsonObject(await readBody(req, opts.maxBodyBytes));

  const refuseWhileDraining = () => {
    if (draining) throw new ApiError(503, 'the server is shutting down and admits no new requests', 'service_unavailable');
  };

  const generation = (parse: typeof parseCompletionRequest): Handler =>
    async (req, res, rc) => {
      const body = await readJson(req);
      try {
        refuseWhileDraining();
        const plan = parse(body, served);
        const aborter = new AbortController();
        // 'close' before the response finished = the client went away: free the engine's blocks now.
        res.once('close', () => {
          if (!res.writableFinished) aborter.abort();
        });
        await runGeneration(plan, { engine, modelName: served.name, signal: aborter.signal, ...rc }, res);
      } catch (err) {
        // A P/D decode leg refused before it started: release the prefill engine's lease now (an
        // admitted request does this itself when it finishes). At worst a second, harmless release.
        const kv = body.kv_transfer_params;
        if (!res.headersSent && kv !== null && typeof kv === 'object' && !Array.isArray(kv)) engine.declineRemoteKv?.(kv as Record<string, unknown>);
        throw err;
      }
    };

  // Routers scrape every ~50 ms; rendering the registry costs ~1 ms, which for 16 idle engines on one
  // machine was half a core. The text is reused while the engine's metrics have not changed, and for at
  // most a second (counters updated outside the engine loop, e.g. KV bytes sent, may lag by that much).
  let cached: { text: string; version: number; at: number } | undefined;
  const renderMetrics = async (): Promise<string> => {
    const version = engine.metricsVersion;
    const now = performance.now();
    if (version !== undefined && cached && cached.version === version && now - cached.at < 1000) return cached.text;
    const text = await opts.metricsRegistry.metrics();
    if (version !== undefined) cached = { text, version, at: now };
    return text;
  };
  const routes: Record<string, Partial<Record<string, Handler>>> = {
    '/v1/completions': { POST: generation(parseCompletionRequest) },
    '/v1/chat/completions': { POST: generation(parseChatRequest) },
    '/v1/models': {
      GET: (_req, res) => {
        const tandem: Record<string, unknown> = {
          role: info.role,
          block_size: info.blockSize,
          num_blocks: info.numBlocks,
          kv_dtype: info.kvDtype,
          engine_id: info.engineId,
          prefix_caching: info.prefixCaching,
          kv_bytes_per_token: info.kvBytesPerToken,
        };
        if (info.simulated) tandem.simulated = info.simulated;
        const kvPort = opts.kvPort ?? engine.info.kvPort;
        if (kvPort !== undefined) tandem.kv_port = kvPort;
        sendJson(
          res,
          200,
          {
            object: 'list',
            data: [
              {
                id: served.name,
                object: 'model',
                created: startedAt,
                owned_by: 'tandem',
                root: opts.modelRoot ?? served.name,
                parent: null,
                max_model_len: served.maxModelLen,
                permission: [
                  {
                    id: `modelperm-${info.engineId}`,
                    object: 'model_permission',
                    created: startedAt,
                    allow_create_engine: false,
                    allow_sampling: true,
                    allow_logprobs: true,
                    allow_search_indices: false,
                    allow_view: true,
                    allow_fine_tuning: false,
                    organization: '*',
                    group: null,
                    is_blocking: false,
                  },
                ],
                tandem,
              },
            ],
          },
        );
      },
    },
    '/health': {
      GET: (_req, res) => {
        res.writeHead(draining ? 503 : 200, { 'content-length': '0' });
        res.end();
      },
    },
    '/metrics': {
      GET: async (_req, res) => {
        const text = await renderMetrics();
        res.writeHead(200, { 'content-type': opts.metricsRegistry.contentType, 'content-length': String(Buffer.byteLength(text)) });
        res.end(text);
      },
    },
    '/version': { GET: (_req, res) => sendJson(res, 200, { version: VERSION }) },
    '/tokenize': {
      POST: async (req, res) => {
        const f = new Fields(await readJson(req));
        checkModel(f, served);
        let tokens: number[];
        if (f.has('messages')) {
          tokens = chatPrompt(f, served);
        } else {
          const prompt = f.string('prompt');
          if (prompt === undefined) throw new ApiError(400, 'either prompt or messages is required', 'invalid_request_error', 'prompt');
          tokens = prompt === '' && f.bool('add_special_tokens') === false ? [] : completionPrompt(prompt, tok, f.bool('add_special_tokens') ?? true);
        }
        const strs = f.bool('return_token_strs') ?? false;
        sendJson(
          res,
          200,
          { count: tokens.length, max_model_len: served.maxModelLen, tokens, token_strs: strs ? tokens.map((t) => tok.piece(t)) : null },
        );
      },
    },
    '/v1/kv/lookup': {
      // For routers (LMCache's lookup API): how much of this prompt's prefix each tier holds.
      POST: async (req, res) => {
        const f = new Fields(await readJson(req));
        checkModel(f, served);
        let tokens: number[];
        const raw = f.raw('tokens');
        if (raw !== undefined) {
          if (!Array.isArray(raw)) throw new ApiError(400, 'tokens must be an array of token ids', 'invalid_request_error', 'tokens');
          checkTokenIds(raw, 'tokens', tok.vocabSize);
          tokens = raw as number[];
        } else if (f.has('messages')) {
          tokens = chatPrompt(f, served);
        } else {
          const prompt = f.string('prompt');
          if (prompt === undefined) throw new ApiError(400, 'one of prompt, tokens or messages is required', 'invalid_request_error', 'prompt');
          tokens = completionPrompt(prompt, tok, true);
        }
        const salt = f.string('cache_salt');
        const r = engine.kvLookup ? await engine.kvLookup(tokens, salt) : { tokens: 0, perTier: {} };
        sendJson(res, 200, { prompt_tokens: tokens.length, matched_tokens: r.tokens, per_tier: r.perTier });
      },
    },
    '/detokenize': {
      POST: async (req, res) => {
        const f = new Fields(await readJson(req));
        checkModel(f, served);
        const tokens = f.raw('tokens');
        if (!Array.isArray(tokens)) throw new ApiError(400, 'tokens must be an array of token ids', 'invalid_request_error', 'tokens');
        checkTokenIds(tokens, 'tokens', tok.vocabSize);
        sendJson(res, 200, { prompt: tok.decode(tokens) });
      },
    },
  };

  const authorized = (req: IncomingMessage): boolean => {
    if (!opts.apiKey) return true;
    const got = Buffer.from(req.headers.authorization ?? '');
    const want = Buffer.from(`Bearer ${opts.apiKey}`);
    return got.length === want.length && timingSafeEqual(got, want);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const rc: RequestContext = { arrivalTime: Date.now() };
    try {
      const path = (req.url ?? '/').split('?', 1)[0]!;
      const route = routes[path];
      if (!route) throw new ApiError(404, `no route for ${req.method} ${path}`, 'not_found_error');
      const handler = route[req.method ?? ''];
      if (!handler) {
        res.setHeader('allow', Object.keys(route).join(', '));
        throw new ApiError(405, `method ${req.method} is not allowed on ${path}`, 'invalid_request_error');
      }
      if (path.startsWith('/v1/') && !authorized(req)) {
        throw new ApiError(401, 'invalid or missing API key (send Authorization: Bearer <key>)', 'authentication_error', null, 'invalid_api_key');
      }
      const rid = req.headers['x-request-id'];
      if (typeof rid === 'string') {
        if (!/^[\x21-\x7e]{1,256}$/.test(rid)) {
          throw new ApiError(400, 'x-request-id must be 1-256 visible ASCII characters', 'invalid_request_error', 'x-request-id');
        }
        rc.clientRequestId = rid;
        // Echoed on every response to this request, errors included.
        res.setHeader('x-request-id', rid);
      }
      if (draining) res.setHeader('connection', 'close');
      await handler(req, res, rc);
    } catch (err) {
      sendError(res, toApiError(err, log));
    }
  };

  const server = createServer({ keepAlive: true }, (req, res) => {
    void handle(req, res);
  }) as OpenAIServer;
  // Slow clients get the whole prompt upload time they need, but not forever.
  server.requestTimeout = 120_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify(new ApiError(400, `malformed HTTP request: ${err.message}`).body());
    socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  Object.defineProperty(server, 'draining', { get: () => draining });
  server.startDraining = () => {
    draining = true;
  };
  return server;
}

/** Whatever a handler threw, as the error a client should see. Unknown errors are bugs: 500, logged. */
function toApiError(err: unknown, log: (m: string) => void): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { name?: string; status?: unknown; message?: string; type?: string; param?: string | null; retryAfter?: number };
  // EngineError from submit(): matched by shape so that a second copy of the module still maps.
  if (e && e.name === 'EngineError' && typeof e.status === 'number') {
    const retryAfter = e.retryAfter ?? (e.status === 429 ? 1 : undefined);
    return new ApiError(e.status, e.message ?? 'engine error', e.type, e.param ?? null, null, retryAfter);
  }
  log(`tandem serve: internal error: ${(err as Error)?.stack ?? String(err)}`);
  return new ApiError(500, `internal error: ${e?.message ?? String(err)}`, 'server_error');
}
