// vLLM-format KV events (reference §5.1): a ZMQ PUB socket; each message is three frames — topic
// `kv@<host>:<port>@<model>`, an 8-byte big-endian sequence number, and a msgpack EventBatch
// encoded positionally, [ts, [event, ...]], with each event a tagged positional array:
//   ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]
//   ["BlockRemoved", block_hashes, medium]
//   ["AllBlocksCleared"]
// Hashes are 64-bit unsigned ints: the low 64 bits of the block's SHA-256 (as vLLM's
// VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES). Events from one engine step go out as one batch.

import { Encoder } from '@msgpack/msgpack';
import { Publisher } from 'zeromq';

export type Medium = 'GPU' | 'CPU' | 'DISK' | 'REMOTE';

/** Low 64 bits of a hex digest, big-endian, as vLLM's int block hashes. */
export function hashToInt(hex: string): bigint {
  return BigInt('0x' + hex.slice(-16));
}

type Event = unknown[];

export class KvEventPublisher {
  private readonly socket = new Publisher({ sendHighWaterMark: 100_000 });
  private readonly encoder = new Encoder({ useBigInt64: true });
  private pending: Event[] = [];
  private seq = 0n;
  private flushScheduled = false;
  topic: string;
  sending: Promise<void> = Promise.resolve();

  private constructor(topic: string) {
    this.topic = topic;
  }

  /** Bind (endpoint contains '*') or connect, as vLLM's publisher does. */
  static async open(endpoint: string, topic: string): Promise<KvEventPublisher> {
    const p = new KvEventPublisher(topic);
    if (endpoint.includes('*') || endpoint.includes('0.0.0.0')) await p.socket.bind(endpoint);
    else p.socket.connect(endpoint);
    return p;
  }

  blockStored(hashes: string[], parentHash: string | null, tokenIds: number[], blockSize: number, medium: Medium): void {
    this.push(['BlockStored', hashes.map(hashToInt), parentHash === null ? null : hashToInt(parentHash), tokenIds, blockSize, null, medium]);
  }

  blockRemoved(hashes: string[], medium: Medium): void {
    this.push(['BlockRemoved', hashes.map(hashToInt), medium]);
  }

  allBlocksCleared(): void {
    this.push(['AllBlocksCleared']);
  }

  private push(e: Event): void {
    this.pending.push(e);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (!this.pending.length) return;
    const batch = [Date.now() / 1000, this.pending];
    this.pending = [];
    const seq = Buffer.alloc(8);
    seq.writeBigUInt64BE(this.seq++);
    const payload = this.encoder.encode(batch);
    // ZMQ sends are queued one at a time; chain them so batches keep their order.
    this.sending = this.sending.then(() => this.socket.send([this.topic, seq, payload])).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.flush();
    await this.sending;
    this.socket.close();
  }
}
