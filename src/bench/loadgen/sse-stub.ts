// A trivial OpenAI-style streaming server: no model, answers at once. It measures the load
// generator's own ceiling (`tandem bench loadgen`) and gives its tests exact, scriptable failures.
//
// Completions only. The answer has `max_tokens` content chunks (default 16) each one token, then a
// usage chunk and [DONE]. A prompt string can script a failure:
//   "!status=503"   answer with that status and an OpenAI error body
//   "!error-after=N" stream N chunks, then an SSE error event and [DONE] (as vLLM and the gateway do)
//   "!cut-after=N"  stream N chunks, then destroy the connection
//   "!no-done"      stream everything but end without [DONE]
//   "!gap-ms=G"     wait G ms between chunks
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SseStub {
  url: string;
  /** requests answered so far */
  requests(): number;
  close(): Promise<void>;
}

function directive(prompt: unknown, name: string): number | undefined {
  if (typeof prompt !== 'string') return undefined;
  const m = new RegExp(`!${name}(?:=(\\d+))?`).exec(prompt);
  return m ? Number(m[1] ?? 0) : undefined;
}

export function startSseStub(port = 0, host = '127.0.0.1'): Promise<SseStub> {
  let count = 0;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'stub', object: 'model' }] }));
      return;
    }
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (raw += d));
    req.on('end', () => {
      count++;
      let body: { prompt?: unknown; max_tokens?: unknown };
      try {
        body = JSON.parse(raw);
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'body is not JSON', type: 'invalid_request_error' } }));
        return;
      }
      const status = directive(body.prompt, 'status');
      if (status !== undefined) {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `scripted status ${status}`, type: 'server_error' } }));
        return;
      }
      const n = typeof body.max_tokens === 'number' ? body.max_tokens : 16;
      const promptLen = Array.isArray(body.prompt) ? body.prompt.length : String(body.prompt ?? '').split(' ').length;
      const errorAfter = directive(body.prompt, 'error-after');
      const cutAfter = directive(body.prompt, 'cut-after');
      const noDone = directive(body.prompt, 'no-done') !== undefined;
      const gap = directive(body.prompt, 'gap-ms') ?? 0;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-tandem-route': 'decode-only', 'x-tandem-decode-endpoint': 'stub' });
      const chunk = (text: string) =>
        `data: {"id":"cmpl-stub","object":"text_completion","model":"stub","choices":[{"index":0,"text":${JSON.stringify(text)},"finish_reason":null}]}\n\n`;
      let i = 0;
      const step = () => {
        let out = '';
        while (i < n) {
          if (errorAfter !== undefined && i === errorAfter) {
            res.end(`${out}data: {"error":{"message":"scripted failure after ${i} chunks","type":"server_error","code":500}}\n\ndata: [DONE]\n\n`);
            return;
          }
          if (cutAfter !== undefined && i === cutAfter) {
            res.write(out);
            res.destroy();
            return;
          }
          out += chunk(` t${i}`);
          i++;
          if (gap > 0) {
            res.write(out);
            setTimeout(step, gap);
            return;
          }
        }
        out += `data: {"id":"cmpl-stub","object":"text_completion","model":"stub","choices":[],"usage":{"prompt_tokens":${promptLen},"completion_tokens":${n},"total_tokens":${promptLen + n}}}\n\n`;
        res.end(noDone ? out : `${out}data: [DONE]\n\n`);
      };
      step();
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address() as AddressInfo;
      resolve({
        url: `http://${host}:${a.port}`,
        requests: () => count,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

// `node --import tsx src/bench/loadgen/sse-stub.ts [port]`: run it standalone (its own process, so
// it does not share an event loop with the generator it measures).
if (import.meta.url === `file://${process.argv[1]}`) {
  const s = await startSseStub(Number(process.argv[2] ?? 0));
  console.log(`sse stub on ${s.url}`);
}
