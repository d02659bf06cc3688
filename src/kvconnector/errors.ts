// Why a KV pull failed, in the words the engine's recompute/fail policy and the
// `tandem:kv_load_failures_total{reason}` metric use.

export const KV_FAILURE_REASONS = [
  'unreachable', // no connection, or the connection died between frames (prefill engine gone)
  'timeout', // connect/handshake or transfer deadline passed
  'lease-expired', // the prefill engine held the blocks, but the lease ran out first
  'unknown-request', // no lease for this request id (never offered, already pulled or released)
  'bad-token', // a lease exists, but the transfer token is not the one minted for it
  'incompatible', // handshake refused: the two engines do not hold the same KV (see `field`)
  'corrupt', // checksum mismatch, truncated frame, garbage, or frames that contradict the request
  'aborted', // the caller's AbortSignal fired
] as const;

export type KvFailureReason = (typeof KV_FAILURE_REASONS)[number];

export function isKvFailureReason(x: unknown): x is KvFailureReason {
  return typeof x === 'string' && (KV_FAILURE_REASONS as readonly string[]).includes(x);
}

export class KvTransferError extends Error {
  override name = 'KvTransferError';
  constructor(
    readonly reason: KvFailureReason,
    message: string,
    /** for 'incompatible': the handshake field that differs (e.g. 'nLayers', 'fingerprint', 'version') */
    readonly field?: string,
  ) {
    super(message);
  }
}
