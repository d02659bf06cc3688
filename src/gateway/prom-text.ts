// Reads the few engine gauges the scheduler uses from Prometheus text exposition, mapping SGLang's
// names onto vLLM's (GIE model-server protocol, reference §4.2). Only wanted lines are parsed.
import type { Role } from './types.ts';

export interface ScrapedMetrics {
  waiting?: number;
  running?: number;
  kvUsage?: number;
  blockSize?: number;
  numBlocks?: number;
  prefillTokensPerSecond?: number;
  role?: Role;
}

type Handler = (m: ScrapedMetrics, value: number, labels: string) => void;

const sum = (k: 'waiting' | 'running'): Handler => (m, v) => {
  m[k] = (m[k] ?? 0) + v;
};
const max = (k: 'kvUsage' | 'prefillTokensPerSecond'): Handler => (m, v) => {
  m[k] = Math.max(m[k] ?? 0, v);
};

function label(labels: string, name: string): string | undefined {
  const re = new RegExp(`(?:^|[,{\\s])${name}="((?:[^"\\\\]|\\\\.)*)"`);
  return re.exec(labels)?.[1];
}

const cacheInfo = (blockLabel: string, blocksLabel: string): Handler => (m, _v, labels) => {
  const bs = Number(label(labels, blockLabel));
  const nb = Number(label(labels, blocksLabel));
  if (Number.isFinite(bs) && bs > 0) m.blockSize = bs;
  if (Number.isFinite(nb) && nb > 0) m.numBlocks = nb;
};

const handlers: Record<string, Handler> = {
  'vllm:num_requests_waiting': sum('waiting'),
  'vllm:num_requests_running': sum('running'),
  'vllm:kv_cache_usage_perc': max('kvUsage'),
  'vllm:gpu_cache_usage_perc': max('kvUsage'),
  'vllm:cache_config_info': cacheInfo('block_size', 'num_gpu_blocks'),
  'sglang:num_queue_reqs': sum('waiting'),
  'sglang:num_running_reqs': sum('running'),
  'sglang:token_usage': max('kvUsage'),
  'sglang:cache_config_info': cacheInfo('page_size', 'num_pages'),
  'tandem:prefill_tokens_per_second': max('prefillTokensPerSecond'),
  'tandem:engine_info': (m, _v, labels) => {
    const r = label(labels, 'role');
    if (r === 'prefill' || r === 'decode' || r === 'both') m.role = r;
  },
};

export function parsePromText(text: string): ScrapedMetrics {
  const m: ScrapedMetrics = {};
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const c = text.charCodeAt(start);
    // only lines starting with vllm:, sglang: or tandem: matter
    if (c === 118 || c === 115 || c === 116) {
      const line = text.slice(start, end);
      const brace = line.indexOf('{');
      const space = line.indexOf(' ');
      const nameEnd = brace >= 0 && (space < 0 || brace < space) ? brace : space;
      if (nameEnd > 0) {
        const h = handlers[line.slice(0, nameEnd)];
        if (h) {
          const close = brace === nameEnd ? line.lastIndexOf('}') : -1;
          const labels = close > 0 ? line.slice(nameEnd, close + 1) : '';
          const rest = line.slice(close > 0 ? close + 1 : nameEnd).trim().split(/\s+/)[0];
          const v = Number(rest);
          if (rest !== undefined && rest !== '' && !Number.isNaN(v)) h(m, v, labels);
        }
      }
    }
    start = end + 1;
  }
  return m;
}
