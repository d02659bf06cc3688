// vLLM's `kv_transfer_params`, as the NixlConnector two-leg protocol carries them (llm-d's decode
// sidecar and vLLM's toy proxy pass the leg-1 response object verbatim into leg 2). tandem adds its
// own `tandem_*` keys next to vLLM's; a vLLM-made object without them is not pullable by tandem.

import type { KvDtype } from '../kernels/types.ts';

export interface PrefillResponseParams {
  do_remote_prefill: true;
  do_remote_decode: false;
  remote_engine_id: string;
  remote_request_id: string;
  remote_block_ids: number[];
  remote_host: string;
  remote_port: number;
  tp_size: 1;
  tandem_transfer_token: string;
  tandem_block_size: number;
  tandem_kv_dtype: KvDtype;
  tandem_num_tokens: number;
  tandem_fingerprint: string;
}

export interface PrefillResponseInput {
  engineId: string;
  requestId: string;
  blockIds: ArrayLike<number>;
  /** advertised host of the KV transfer service (--kv-advertise-host, else its bind address) */
  host: string;
  port: number;
  transferToken: string;
  blockSize: number;
  kvDtype: KvDtype;
  /** tokens of KV leased (the prompt length) */
  numTokens: number;
  fingerprint: string;
}

/** The `kv_transfer_params` of a leg-1 (prefill) response. */
export function buildPrefillResponseParams(i: PrefillResponseInput): PrefillResponseParams {
  return {
    do_remote_prefill: true,
    do_remote_decode: false,
    remote_engine_id: i.engineId,
    remote_request_id: i.requestId,
    remote_block_ids: Array.from(i.blockIds),
    remote_host: i.host,
    remote_port: i.port,
    tp_size: 1,
    tandem_transfer_token: i.transferToken,
    tandem_block_size: i.blockSize,
    tandem_kv_dtype: i.kvDtype,
    tandem_num_tokens: i.numTokens,
    tandem_fingerprint: i.fingerprint,
  };
}

/** Leg 1: the router asks this engine to prefill and keep the KV for a remote decode. */
export function wantsRemoteDecode(params: unknown): boolean {
  return isObject(params) && params['do_remote_decode'] === true;
}

export interface RemotePrefill {
  engineId: string;
  requestId: string;
  host: string;
  port: number;
  blockIds: number[];
  transferToken: string;
  /** tandem extras: absent when the prefill engine did not send them */
  blockSize?: number;
  kvDtype?: KvDtype;
  numTokens?: number;
  fingerprint?: string;
}

export type DecodeParams =
  /** no remote prefill asked for: run normally */
  | { kind: 'none' }
  /** asked for, but unusable: vLLM logs it and runs the request without a transfer */
  | { kind: 'invalid'; error: string }
  | { kind: 'remote-prefill'; remote: RemotePrefill };

/** Validate a leg-2 (decode) `kv_transfer_params` object. Never throws. */
export function parseDecodeParams(params: unknown): DecodeParams {
  if (params === undefined || params === null) return { kind: 'none' };
  if (!isObject(params)) return { kind: 'invalid', error: 'kv_transfer_params must be an object' };
  if (params['do_remote_prefill'] !== true) return { kind: 'none' };
  const missing = ['remote_engine_id', 'remote_request_id', 'remote_host', 'remote_port'].filter((k) => params[k] === undefined || params[k] === null);
  if (missing.length) return { kind: 'invalid', error: `kv_transfer_params is missing ${missing.join(', ')}` };
  const bad = (error: string): DecodeParams => ({ kind: 'invalid', error: `kv_transfer_params: ${error}` });

  const engineId = params['remote_engine_id'];
  const requestId = params['remote_request_id'];
  const host = params['remote_host'];
  const port = params['remote_port'];
  if (!isString(engineId, 256)) return bad('remote_engine_id must be a non-empty string');
  if (!isString(requestId, 512)) return bad('remote_request_id must be a non-empty string of at most 512 characters');
  if (!isString(host, 255)) return bad('remote_host must be a non-empty host name or address');
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) return bad('remote_port must be an integer in 1..65535');

  const blockIds = params['remote_block_ids'] ?? [];
  if (!Array.isArray(blockIds) || !blockIds.every((b) => Number.isInteger(b) && b >= 0)) return bad('remote_block_ids must be an array of block ids');
  const tp = params['tp_size'] ?? 1;
  if (tp !== 1) return bad(`tp_size ${JSON.stringify(tp)} is not supported (tandem engines are tp_size 1)`);

  const token = params['tandem_transfer_token'];
  if (token === undefined) return bad('tandem_transfer_token is missing (not a tandem prefill engine?)');
  if (!isString(token, 256)) return bad('tandem_transfer_token must be a non-empty string');

  const remote: RemotePrefill = { engineId, requestId, host, port: port as number, blockIds: blockIds as number[], transferToken: token };
  const blockSize = params['tandem_block_size'];
  if (blockSize !== undefined) {
    if (!Number.isInteger(blockSize) || (blockSize as number) < 1) return bad('tandem_block_size must be a positive integer');
    remote.blockSize = blockSize as number;
  }
  const dtype = params['tandem_kv_dtype'];
  if (dtype !== undefined) {
    if (dtype !== 'f32' && dtype !== 'f16') return bad("tandem_kv_dtype must be 'f32' or 'f16'");
    remote.kvDtype = dtype;
  }
  const numTokens = params['tandem_num_tokens'];
  if (numTokens !== undefined) {
    if (!Number.isInteger(numTokens) || (numTokens as number) < 0) return bad('tandem_num_tokens must be a non-negative integer');
    remote.numTokens = numTokens as number;
  }
  const fingerprint = params['tandem_fingerprint'];
  if (fingerprint !== undefined) {
    if (!isString(fingerprint, 256)) return bad('tandem_fingerprint must be a non-empty string');
    remote.fingerprint = fingerprint;
  }
  return { kind: 'remote-prefill', remote };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isString(x: unknown, maxLength: number): x is string {
  return typeof x === 'string' && x.length > 0 && x.length <= maxLength;
}
