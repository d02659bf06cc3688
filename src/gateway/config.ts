// EndpointPickerConfig loading with llm-d's defaulting rules (reference §1.7), so an llm-d user's
// config needs no translation. Every error names the file, line and column of the offending node.
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import {
  ParamError,
  type AnyPlugin,
  type DataProducer,
  type Filter,
  type Picker,
  type ProfileHandler,
  type Scorer,
} from './types.ts';
import { pluginRegistry, PREFIX_PRODUCER_TYPES } from './plugins/registry.ts';
import type { PluginContext } from './plugins/context.ts';
import { asParams } from './plugins/params.ts';

export interface Profile {
  name: string;
  filters: Filter[];
  scorers: { scorer: Scorer; weight: number }[];
  picker: Picker;
}

export interface SchedulerConfig {
  plugins: Map<string, AnyPlugin>;
  profiles: Map<string, Profile>;
  handler: ProfileHandler;
  /** run in this order before the profiles (token producer first: prefix producers read its ids) */
  producers: DataProducer[];
  /** notes on what the defaulting rules added, for the start-up log */
  notes: string[];
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly userFacing = true;
}

/** The default: llm-d's Helm weights (queue 2, kv 2, prefix 3) plus gateway-tracked load, decode-first P/D
 * split by prefix-based-pd-decider at 16 uncached tokens, prompts tokenized by the engines when they can. */
export const DEFAULT_CONFIG_YAML = `apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: token-producer
  parameters: {backend: auto}
- type: approx-prefix-cache-producer
- type: decode-filter
- type: prefill-filter
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: active-request-scorer
- type: max-score-picker
- type: prefix-based-pd-decider
  parameters: {nonCachedTokens: 16}
- type: disagg-profile-handler
  parameters:
    deciders: {prefill: prefix-based-pd-decider}
schedulingProfiles:
- name: decode
  plugins:
  - {pluginRef: decode-filter}
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: active-request-scorer, weight: 1}
  - {pluginRef: max-score-picker}
- name: prefill
  plugins:
  - {pluginRef: prefill-filter}
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: active-request-scorer, weight: 1}
  - {pluginRef: max-score-picker}
`;

const IGNORED_TOP_LEVEL = ['featureGates', 'requestHandler', 'flowControl', 'dataLayer', 'saturationDetector'];
const KNOWN_TOP_LEVEL = ['apiVersion', 'kind', 'plugins', 'schedulingProfiles', ...IGNORED_TOP_LEVEL];

export function loadSchedulerConfig(text: string, ctx: PluginContext, source = 'config'): SchedulerConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const where = (path: (string | number)[]): string => {
    // walk up the path until a node exists, so a missing key reports its parent's line
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : (doc as Document).getIn(path.slice(0, n), true);
      if (isNode(node) && node.range) {
        const { line, col } = lineCounter.linePos(node.range[0]);
        return `${source}:${line}:${col}`;
      }
    }
    return source;
  };
  const fail = (path: (string | number)[], msg: string): never => {
    throw new ConfigError(`${where(path)}: ${msg}`);
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const pos = e.linePos?.[0] ?? (e.pos ? lineCounter.linePos(e.pos[0]) : undefined);
    throw new ConfigError(`${source}${pos ? `:${pos.line}:${pos.col}` : ''}: ${e.message.split('\n')[0]}`);
  }
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) fail([], 'the config is empty');
  if (typeof data !== 'object' || Array.isArray(data)) fail([], 'the config must be a map (EndpointPickerConfig)');
  const top = data as Record<string, unknown>;
  const notes: string[] = [];
  for (const k of Object.keys(top)) {
    if (!KNOWN_TOP_LEVEL.includes(k)) fail([k], `unknown field '${k}' (known: ${KNOWN_TOP_LEVEL.join(', ')})`);
    if (IGNORED_TOP_LEVEL.includes(k)) notes.push(`'${k}' is accepted for compatibility and ignored`);
  }
  if (top.kind !== undefined && top.kind !== 'EndpointPickerConfig') fail(['kind'], `kind must be EndpointPickerConfig, got '${String(top.kind)}'`);
  if (top.apiVersion !== undefined && typeof top.apiVersion !== 'string') fail(['apiVersion'], 'apiVersion must be a string');

  // --- plugins
  const plugins = new Map<string, AnyPlugin>();
  const pluginPath = new Map<string, (string | number)[]>();
  const rawPlugins = top.plugins ?? [];
  if (!Array.isArray(rawPlugins)) fail(['plugins'], 'plugins must be a list');
  const add = (plugin: AnyPlugin, path: (string | number)[]) => {
    if (plugins.has(plugin.name)) fail(path, `duplicate plugin name '${plugin.name}'`);
    plugins.set(plugin.name, plugin);
    pluginPath.set(plugin.name, path);
  };
  const create = (type: string, name: string, params: unknown, path: (string | number)[]): AnyPlugin => {
    const factory = pluginRegistry.get(type);
    if (!factory) fail([...path, 'type'], `unknown plugin type '${type}' (known: ${[...pluginRegistry.keys()].join(', ')})`);
    try {
      return factory!.create(name, asParams(params), ctx);
    } catch (err) {
      if (err instanceof ParamError) fail([...path, 'parameters', ...err.path], `${type} '${name}': ${err.message}`);
      throw err;
    }
  };
  (rawPlugins as unknown[]).forEach((item, i) => {
    const path = ['plugins', i];
    if (typeof item !== 'object' || item === null || Array.isArray(item)) fail(path, 'each plugin must be a map with a type');
    const { type, name, parameters, ...rest } = item as Record<string, unknown>;
    for (const k of Object.keys(rest)) fail([...path, k], `unknown plugin field '${k}' (known: type, name, parameters)`);
    if (typeof type !== 'string' || !type) fail(path, 'plugin needs a type');
    if (name !== undefined && (typeof name !== 'string' || !name)) fail([...path, 'name'], 'plugin name must be a non-empty string');
    const pname = (name as string | undefined) ?? (type as string);
    if (type === 'precise-prefix-cache-scorer') {
      // llm-d's deprecated wrapper = precise producer + prefix-cache-scorer reading it
      const producer = create('precise-prefix-cache-producer', `${pname}-producer`, parameters, path);
      add(producer, path);
      add(create('prefix-cache-scorer', pname, { prefixMatchInfoProducerName: producer.name }, path), path);
      notes.push(`'${pname}': precise-prefix-cache-scorer expanded to precise-prefix-cache-producer + prefix-cache-scorer`);
      return;
    }
    add(create(type as string, pname, parameters, path), path);
  });

  // --- profiles
  const profiles = new Map<string, Profile>();
  let defaultPicker: Picker | undefined;
  const injectPicker = (): Picker => {
    if (!defaultPicker) {
      defaultPicker = pluginRegistry.get('max-score-picker')!.create('max-score-picker', {}, ctx) as Picker;
      if (!plugins.has(defaultPicker.name)) plugins.set(defaultPicker.name, defaultPicker);
    }
    return defaultPicker;
  };
  if (top.schedulingProfiles === undefined) {
    const profile: Profile = { name: 'default', filters: [], scorers: [], picker: undefined as unknown as Picker };
    for (const p of plugins.values()) {
      if (p.kind === 'filter') profile.filters.push(p);
      else if (p.kind === 'scorer') profile.scorers.push({ scorer: p, weight: 1 });
      else if (p.kind === 'picker') {
        if (profile.picker) fail(pluginPath.get(p.name)!, `more than one picker for the implicit default profile ('${profile.picker.name}', '${p.name}')`);
        profile.picker = p;
      }
    }
    if (!profile.picker) {
      profile.picker = injectPicker();
      notes.push("no picker listed: max-score-picker injected");
    }
    profiles.set('default', profile);
    notes.push("no schedulingProfiles: one 'default' profile with every listed filter, scorer and picker");
  } else {
    if (!Array.isArray(top.schedulingProfiles)) fail(['schedulingProfiles'], 'schedulingProfiles must be a list');
    (top.schedulingProfiles as unknown[]).forEach((item, i) => {
      const path = ['schedulingProfiles', i];
      if (typeof item !== 'object' || item === null || Array.isArray(item)) fail(path, 'each profile must be a map with name and plugins');
      const { name, plugins: refs, ...rest } = item as Record<string, unknown>;
      for (const k of Object.keys(rest)) fail([...path, k], `unknown profile field '${k}' (known: name, plugins)`);
      if (typeof name !== 'string' || !name) fail(path, 'profile needs a name');
      if (profiles.has(name as string)) fail([...path, 'name'], `duplicate profile name '${name}'`);
      if (!Array.isArray(refs)) fail(path, `profile '${name}' needs a plugins list`);
      const profile: Profile = { name: name as string, filters: [], scorers: [], picker: undefined as unknown as Picker };
      (refs as unknown[]).forEach((ref, j) => {
        const rpath = [...path, 'plugins', j];
        if (typeof ref !== 'object' || ref === null || Array.isArray(ref)) fail(rpath, 'each profile entry must be a map with pluginRef');
        const { pluginRef, weight, ...more } = ref as Record<string, unknown>;
        for (const k of Object.keys(more)) fail([...rpath, k], `unknown profile entry field '${k}' (known: pluginRef, weight)`);
        if (typeof pluginRef !== 'string') fail(rpath, 'profile entry needs a pluginRef');
        const plugin = plugins.get(pluginRef as string);
        if (!plugin) fail([...rpath, 'pluginRef'], `unknown pluginRef '${pluginRef}' (plugins: ${[...plugins.keys()].join(', ') || 'none'})`);
        let w = 1;
        if (weight !== undefined) {
          if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) fail([...rpath, 'weight'], `bad weight ${JSON.stringify(weight)}: must be a number >= 0`);
          w = weight as number;
        }
        const p = plugin!;
        if (p.kind === 'filter') profile.filters.push(p);
        else if (p.kind === 'scorer') profile.scorers.push({ scorer: p, weight: w });
        else if (p.kind === 'picker') {
          if (profile.picker) fail(rpath, `profile '${name}' has more than one picker`);
          profile.picker = p;
        } else fail([...rpath, 'pluginRef'], `'${pluginRef}' is a ${p.kind}; profiles hold filters, scorers and pickers`);
      });
      if (!profile.picker) {
        profile.picker = injectPicker();
        notes.push(`profile '${name}': no picker, max-score-picker injected`);
      }
      profiles.set(profile.name, profile);
    });
    if (profiles.size === 0) fail(['schedulingProfiles'], 'schedulingProfiles is empty');
  }

  // --- profile handler
  const handlers = [...plugins.values()].filter((p): p is ProfileHandler => p.kind === 'profile-handler');
  if (handlers.length > 1) fail(pluginPath.get(handlers[1]!.name)!, `more than one profile handler ('${handlers[0]!.name}', '${handlers[1]!.name}')`);
  let handler = handlers[0];
  if (!handler) {
    if (profiles.size !== 1) fail(['schedulingProfiles'], `${profiles.size} profiles need a profile handler (e.g. disagg-profile-handler)`);
    handler = pluginRegistry.get('single-profile-handler')!.create('single-profile-handler', {}, ctx) as ProfileHandler;
    notes.push('one profile and no handler: single-profile-handler');
  }
  if (handler.type === 'single-profile-handler' && profiles.size !== 1) {
    fail(pluginPath.get(handler.name) ?? [], `single-profile-handler needs exactly one profile, found ${profiles.size}`);
  }
  const resolvable = handler as ProfileHandler & { resolve?: (l: (n: string) => AnyPlugin | undefined) => void; profileNames?: { decode: string } };
  if (resolvable.resolve) {
    try {
      resolvable.resolve((n) => plugins.get(n));
    } catch (err) {
      if (err instanceof ParamError) fail([...(pluginPath.get(handler.name) ?? []), 'parameters', ...err.path], `${handler.type}: ${err.message}`);
      throw err;
    }
  }
  if (resolvable.profileNames && !profiles.has(resolvable.profileNames.decode)) {
    fail(pluginPath.get(handler.name) ?? ['schedulingProfiles'], `${handler.type} needs a '${resolvable.profileNames.decode}' profile (profiles: ${[...profiles.keys()].join(', ')})`);
  }

  // --- producers: token producer always; a prefix producer when something reads prefix matches
  let producers = [...plugins.values()].filter((p): p is DataProducer => p.kind === 'producer');
  if (!producers.some((p) => p.type === 'token-producer')) {
    const tp = pluginRegistry.get('token-producer')!.create('token-producer', {}, ctx) as DataProducer;
    plugins.set(tp.name, tp);
    producers.unshift(tp);
    notes.push('token-producer (backend auto) added');
  }
  const readers = [...plugins.values()].filter((p) => 'producerName' in p) as (AnyPlugin & { producerName: string | undefined })[];
  let prefixProducers = producers.filter((p) => PREFIX_PRODUCER_TYPES.has(p.type));
  if (readers.length && prefixProducers.length === 0) {
    const ap = pluginRegistry.get('approx-prefix-cache-producer')!.create('approx-prefix-cache-producer', {}, ctx) as DataProducer;
    plugins.set(ap.name, ap);
    producers.push(ap);
    prefixProducers = [ap];
    notes.push('approx-prefix-cache-producer added for prefix matches');
  }
  for (const r of readers) {
    if (r.producerName === undefined) r.producerName = prefixProducers[0]?.name;
    else if (!prefixProducers.some((p) => p.name === r.producerName)) {
      fail([...(pluginPath.get(r.name) ?? []), 'parameters', 'prefixMatchInfoProducerName'], `'${r.producerName}' is not a prefix producer (have: ${prefixProducers.map((p) => p.name).join(', ')})`);
    }
  }
  producers = [...producers.filter((p) => p.type === 'token-producer'), ...producers.filter((p) => p.type !== 'token-producer')];
  return { plugins, profiles, handler, producers, notes };
}
