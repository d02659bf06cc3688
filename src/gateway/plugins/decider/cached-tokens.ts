// Shared by the deciders: prompt tokens and the prefix already cached on an endpoint.
import type { Endpoint, SchedulingRequest } from '../../types.ts';

export interface UsesPrefixProducer {
  /** filled in by the config loader when not configured */
  producerName: string | undefined;
}

export function promptTokens(req: SchedulingRequest): number {
  return req.tokens?.count ?? Math.ceil(Buffer.byteLength(req.promptText) / 4);
}

/** Cached tokens on `ep` according to the producer: matched blocks × block size, capped at the prompt. */
export function cachedTokens(req: SchedulingRequest, ep: Endpoint, producer: string | undefined): number {
  const m = producer ? req.prefix.get(producer)?.get(ep.id) : undefined;
  if (!m) return 0;
  return Math.min(promptTokens(req), m.matchBlocks * m.blockSize);
}
