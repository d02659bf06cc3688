// tandem gateway: one OpenAI endpoint over pools of prefill and decode engines, with an
// llm-d-shaped endpoint picker (EndpointPickerConfig plugins and profiles).
export { Gateway, startGateway, type GatewayOptions } from './server.ts';
export { loadSchedulerConfig, ConfigError, DEFAULT_CONFIG_YAML, type SchedulerConfig, type Profile } from './config.ts';
export { Scheduler, runProfile } from './scheduler.ts';
export { EndpointPool, parseRegistration, type EndpointSpec, type PoolOptions } from './endpoints.ts';
export { parseEndpointFlag, PD_PROXY_CONFIG_YAML } from './flags.ts';
export { decodeEventBatch, KvEventSubscriber, type EventBatch, type KvEvent } from './kv-events.ts';
export { ObservedRates } from './observed-rates.ts';
export { pluginRegistry } from './plugins/registry.ts';
export type { PluginContext, PluginFactory } from './plugins/context.ts';
export * from './types.ts';
