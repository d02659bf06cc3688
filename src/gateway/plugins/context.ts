// What a plugin factory gets besides its parameters: shared gateway services, never other plugins.
import type { AnyPlugin, Endpoint, PluginKind, SchedulingRequest } from '../types.ts';
import type { ObservedRates } from '../observed-rates.ts';
import type { Params } from './params.ts';

export interface EndpointEvents {
  /** called for every current and future endpoint; returns an unsubscribe function */
  onEndpoint(added: (ep: Endpoint) => void, removed: (ep: Endpoint) => void): () => void;
}

export interface EngineTokenizer {
  /** exact token ids from an engine's POST /tokenize, or undefined when no endpoint can tokenize */
  tokenize(req: SchedulingRequest, candidates: readonly Endpoint[]): Promise<number[] | undefined>;
  /** false when every candidate is known not to tokenize: callers can stay synchronous */
  mayTokenize(candidates: readonly Endpoint[]): boolean;
}

export interface PluginContext {
  rates: ObservedRates;
  endpoints: EndpointEvents;
  tokenizer: EngineTokenizer;
  log(message: string): void;
}

export interface PluginFactory {
  readonly type: string;
  readonly kind: PluginKind;
  create(name: string, params: Params, ctx: PluginContext): AnyPlugin;
}
