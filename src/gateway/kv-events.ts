// vLLM KV events (reference §5): ZMQ PUB, three frames — topic `kv@<host>:<port>@<model>`, 8-byte
// big-endian sequence number, msgpack EventBatch. Both encodings vLLM has used are accepted: the
// batch as a positional array [ts, events, dp_rank?] or a map, and each event as a tagged positional
// array [tag, ...fields] or a map with a "type" key.
import { Decoder } from '@msgpack/msgpack';
import { Subscriber } from 'zeromq';

export type BlockHash = string;

export type KvEvent =
  | { type: 'BlockStored'; blockHashes: BlockHash[]; parentBlockHash: BlockHash | null; tokenIds: number[]; blockSize: number; medium?: string }
  | { type: 'BlockRemoved'; blockHashes: BlockHash[]; medium?: string }
  | { type: 'AllBlocksCleared' };

export interface EventBatch {
  ts: number;
  events: KvEvent[];
  dataParallelRank?: number;
}

export class KvEventDecodeError extends Error {
  override name = 'KvEventDecodeError';
}

// int64 hashes above 2^53 must not lose precision: decode them as BigInt
const decoder = new Decoder({ useBigInt64: true });

/** Engine hashes are opaque keys: 64-bit ints (number or bigint) or raw bytes, normalised to a string. */
export function hashKey(h: unknown): BlockHash {
  if (typeof h === 'number' && Number.isInteger(h)) return BigInt.asUintN(64, BigInt(h)).toString();
  if (typeof h === 'bigint') return BigInt.asUintN(64, h).toString();
  if (h instanceof Uint8Array) return `x${Buffer.from(h.buffer, h.byteOffset, h.byteLength).toString('hex')}`;
  if (typeof h === 'string') return `s${h}`;
  throw new KvEventDecodeError(`block hash of unexpected type ${typeof h}`);
}

function hashes(v: unknown, field: string): BlockHash[] {
  if (!Array.isArray(v)) throw new KvEventDecodeError(`${field} must be a list`);
  return v.map(hashKey);
}

function toNum(v: unknown, field: string): number {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v !== 'number') throw new KvEventDecodeError(`${field} must be a number`);
  return v;
}

function decodeEvent(e: unknown): KvEvent | undefined {
  let tag: unknown;
  let f: Record<string, unknown>;
  if (Array.isArray(e)) {
    tag = e[0];
    if (tag === 'BlockStored') {
      f = { block_hashes: e[1], parent_block_hash: e[2], token_ids: e[3], block_size: e[4], medium: e[6] };
    } else if (tag === 'BlockRemoved') f = { block_hashes: e[1], medium: e[2] };
    else f = {};
  } else if (e && typeof e === 'object') {
    f = e as Record<string, unknown>;
    tag = f.type ?? f.tag;
  } else throw new KvEventDecodeError('event must be an array or a map');
  switch (tag) {
    case 'BlockStored': {
      const tokens = f.token_ids;
      if (!Array.isArray(tokens)) throw new KvEventDecodeError('BlockStored.token_ids must be a list');
      return {
        type: 'BlockStored',
        blockHashes: hashes(f.block_hashes, 'BlockStored.block_hashes'),
        parentBlockHash: f.parent_block_hash === null || f.parent_block_hash === undefined ? null : hashKey(f.parent_block_hash),
        tokenIds: tokens.map((t) => toNum(t, 'token id')),
        blockSize: toNum(f.block_size, 'BlockStored.block_size'),
        medium: typeof f.medium === 'string' ? f.medium : undefined,
      };
    }
    case 'BlockRemoved':
      return { type: 'BlockRemoved', blockHashes: hashes(f.block_hashes, 'BlockRemoved.block_hashes'), medium: typeof f.medium === 'string' ? f.medium : undefined };
    case 'AllBlocksCleared':
      return { type: 'AllBlocksCleared' };
    default:
      return undefined; // newer event kinds we do not index
  }
}

export function decodeEventBatch(payload: Uint8Array): EventBatch {
  let raw: unknown;
  try {
    raw = decoder.decode(payload);
  } catch (err) {
    throw new KvEventDecodeError(`payload is not msgpack: ${(err as Error).message}`);
  }
  let ts: unknown, events: unknown, rank: unknown;
  if (Array.isArray(raw)) [ts, events, rank] = raw;
  else if (raw && typeof raw === 'object') ({ ts, events, data_parallel_rank: rank } = raw as Record<string, unknown>);
  else throw new KvEventDecodeError('EventBatch must be an array or a map');
  if (!Array.isArray(events)) throw new KvEventDecodeError('EventBatch.events must be a list');
  const out: KvEvent[] = [];
  for (const e of events) {
    const ev = decodeEvent(e);
    if (ev) out.push(ev);
  }
  return { ts: ts === undefined || ts === null ? 0 : toNum(ts, 'ts'), events: out, dataParallelRank: rank === undefined || rank === null ? undefined : toNum(rank, 'data_parallel_rank') };
}

/** Where to connect for an engine's `--kv-events-endpoint`: a bind address (`tcp://*:5557`) is reached on the engine's host. */
export function connectAddress(kvEventsEndpoint: string, engineHost: string): string {
  return kvEventsEndpoint.replace('//*:', `//${engineHost}:`).replace('//0.0.0.0:', `//${engineHost}:`);
}

/** One SUB socket per engine; batches are handed over in order. Decode errors and sequence gaps are reported, never thrown. */
export class KvEventSubscriber {
  private readonly sock = new Subscriber();
  private lastSeq: bigint | undefined;
  private closed = false;
  readonly done: Promise<void>;

  constructor(
    readonly address: string,
    onBatch: (batch: EventBatch, topic: string) => void,
    onProblem: (message: string) => void,
    /** the sequence went back (to 0, as a new publisher starts): the engine restarted and lost what it held in memory */
    onRestart?: (message: string) => void,
  ) {
    this.sock.connect(address);
    this.sock.subscribe('kv@');
    this.done = (async () => {
      try {
        for await (const frames of this.sock) {
          if (frames.length < 3) {
            onProblem(`${address}: message with ${frames.length} frames (expected topic, seq, payload)`);
            continue;
          }
          const [topic, seqBuf, payload] = frames as [Buffer, Buffer, Buffer];
          if (seqBuf.length === 8) {
            const seq = seqBuf.readBigUInt64BE(0);
            if (this.lastSeq !== undefined && seq <= this.lastSeq) onRestart?.(`${address}: sequence went back ${this.lastSeq} → ${seq}: the engine restarted`);
            else if (this.lastSeq !== undefined && seq !== this.lastSeq + 1n) onProblem(`${address}: sequence gap ${this.lastSeq} → ${seq}; index may be missing blocks`);
            this.lastSeq = seq;
          }
          try {
            onBatch(decodeEventBatch(payload), topic.toString());
          } catch (err) {
            onProblem(`${address}: ${(err as Error).message}`);
          }
        }
      } catch (err) {
        if (!this.closed) onProblem(`${address}: subscriber stopped: ${(err as Error).message}`);
      }
    })();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}
