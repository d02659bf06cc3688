// The KV connector's transfer service: a prefill engine leases a finished prompt's KV blocks and
// serves them over binary frames on TCP (KvTransferServer); a decode engine pulls them into its own
// pool, converting block size and dtype (pullKv). Simulated engines use the same service with
// payload-less frames paced by a link model (simulatedLink / simulated). See docs/kv-connector.md.

export { KvTransferServer, type KvTransferServerOptions, type LeaseOffer, type LeaseReleaseReason, type SimulatedLink } from './server.ts';
export {
  KvTransferClient,
  pullKv,
  releaseKv,
  closeKvConnections,
  type KvTransferClientOptions,
  type PullKvOptions,
  type PullKvResult,
  type ReleaseKvOptions,
} from './client.ts';
export { KvTransferError, KV_FAILURE_REASONS, isKvFailureReason, type KvFailureReason } from './errors.ts';
export { createKvMetrics, type KvMetrics } from './metrics.ts';
export {
  buildPrefillResponseParams,
  parseDecodeParams,
  wantsRemoteDecode,
  type DecodeParams,
  type PrefillResponseInput,
  type PrefillResponseParams,
  type RemotePrefill,
} from './params.ts';
export { PROTOCOL_VERSION, type KvCompat } from './wire.ts';
