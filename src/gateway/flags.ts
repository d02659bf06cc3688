// Command-line forms shared by `tandem gateway`, `tandem pd-proxy` and `tandem up`.
import { UsageError } from '../cli/args.ts';
import { ROLES, type Role } from './types.ts';
import { parseEndpointUrl, RegistrationError, type EndpointSpec } from './endpoints.ts';

/** `URL[,role=prefill|decode|both][,kv-events=tcp://host:port][,model=NAME][,label=value…]` */
export function parseEndpointFlag(text: string): EndpointSpec {
  const [url, ...opts] = text.split(',');
  try {
    parseEndpointUrl(url!);
  } catch (err) {
    throw new UsageError(`--endpoint ${(err as RegistrationError).message}`);
  }
  const spec: EndpointSpec = { url: url! };
  const labels: Record<string, string> = {};
  for (const o of opts) {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new UsageError(`--endpoint option '${o}' must be key=value`);
    const k = o.slice(0, eq);
    const v = o.slice(eq + 1);
    if (k === 'role') {
      if (!ROLES.includes(v as Role)) throw new UsageError(`--endpoint role must be one of ${ROLES.join(', ')}, got '${v}'`);
      spec.role = v as Role;
    } else if (k === 'kv-events' || k === 'kv_events_endpoint') {
      if (!/^(tcp|ipc):\/\//.test(v)) throw new UsageError(`--endpoint kv-events must be a ZMQ address like tcp://127.0.0.1:5557, got '${v}'`);
      spec.kvEventsEndpoint = v;
    } else if (k === 'model') spec.model = v;
    else labels[k] = v;
  }
  if (Object.keys(labels).length) spec.labels = labels;
  return spec;
}

/** vLLM toy proxy behaviour: every request split, prefill and decode endpoints round-robin independently. */
export const PD_PROXY_CONFIG_YAML = `apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
- type: prefill-filter
- {type: round-robin, name: decode-rr}
- {type: round-robin, name: prefill-rr}
- type: always-disagg-pd-decider
- type: disagg-profile-handler
  parameters: {deciders: {prefill: always-disagg-pd-decider}}
schedulingProfiles:
- name: decode
  plugins: [{pluginRef: decode-filter}, {pluginRef: decode-rr}]
- name: prefill
  plugins: [{pluginRef: prefill-filter}, {pluginRef: prefill-rr}]
`;
