// disagg-profile-handler (decode-first, llm-d's pickDecodeFirst): run the decode profile; if a
// prefill profile exists and the prefill decider approves for the chosen decode endpoint, run the
// prefill profile too. No prefill decider ⇒ P/D disabled.
import { NoEndpointError, ParamError, type AnyPlugin, type Decider, type DeciderContext, type Endpoint, type ProfileContext, type ProfileHandler } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

export interface DisaggProfileHandler extends ProfileHandler {
  readonly profileNames: { decode: string; prefill: string };
  readonly deciderName: string | undefined;
  /** binds the decider by name once every plugin exists */
  resolve(lookup: (name: string) => AnyPlugin | undefined): void;
}

function names(v: unknown, key: string, allowed: string[]): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ParamError(`${key} must be a map`, [key]);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (!allowed.includes(k)) throw new ParamError(`${key}.${k} is not supported (known: ${allowed.join(', ')})`, [key, k]);
    if (typeof x !== 'string') throw new ParamError(`${key}.${k} must be a plugin name`, [key, k]);
    out[k] = x;
  }
  return out;
}

export const disaggProfileHandler: PluginFactory = {
  type: 'disagg-profile-handler',
  kind: 'profile-handler',
  create(name, raw): DisaggProfileHandler {
    const p = asParams(raw);
    only(p, ['profiles', 'deciders', 'stageOrder']);
    const profiles = names(p.profiles, 'profiles', ['decode', 'prefill']);
    const deciders = names(p.deciders, 'deciders', ['prefill']);
    if (p.stageOrder !== undefined && p.stageOrder !== 'decode-first') {
      throw new ParamError(`stageOrder '${String(p.stageOrder)}' is not supported; tandem runs decode-first`, ['stageOrder']);
    }
    const decodeProfile = profiles.decode ?? 'decode';
    const prefillProfile = profiles.prefill ?? 'prefill';
    let decider: Decider | undefined;
    return {
      type: 'disagg-profile-handler',
      name,
      kind: 'profile-handler',
      profileNames: { decode: decodeProfile, prefill: prefillProfile },
      deciderName: deciders.prefill,
      resolve(lookup) {
        if (deciders.prefill === undefined) return;
        const d = lookup(deciders.prefill);
        if (!d) throw new ParamError(`deciders.prefill names unknown plugin '${deciders.prefill}'`, ['deciders', 'prefill']);
        if (d.kind !== 'decider') throw new ParamError(`deciders.prefill '${deciders.prefill}' is a ${d.kind}, not a decider`, ['deciders', 'prefill']);
        decider = d;
      },
      schedule(req, ctx) {
        const decode = ctx.run(decodeProfile);
        if (!decode || decode.targets.length === 0) throw new NoEndpointError('failed to find available decode workers');
        const target = decode.targets[0]!;
        if (!decider || !ctx.profiles.has(prefillProfile)) {
          return { decision: 'decode-only', decode: decode.targets, reason: 'P/D disabled (no prefill decider or profile)' };
        }
        const many = sequencesAsked(req.body);
        if (many > 1) return { decision: 'decode-only', decode: decode.targets, reason: `${many} sequences asked (n/best_of): a P/D leg carries one` };
        const prefillRun = new PrefillRun(ctx, prefillProfile, target.id);
        const d = decider.decide(req, target, prefillRun);
        if (!d.disaggregate) return { decision: 'decode-only', decode: decode.targets, reason: d.reason };
        const prefill = prefillRun.targets();
        if (prefill.length === 0) {
          return { decision: 'decode-only', decode: decode.targets, reason: `${d.reason}; no prefill endpoint available` };
        }
        return { decision: 'prefill-decode', decode: decode.targets, prefill, reason: d.reason };
      },
    };
  },
};

/**
 * How many sequences the request asks for. vLLM's P/D protocol moves one sequence's KV per request
 * (tandem engines refuse kv_transfer_params with n > 1), so such a request is not split: splitting it
 * would only cost a refused prefill leg before the same decode-local run.
 */
function sequencesAsked(body: Record<string, unknown>): number {
  const n = typeof body.n === 'number' ? body.n : 1;
  const bestOf = typeof body.best_of === 'number' ? body.best_of : 1;
  return Math.max(n, bestOf);
}

/** The prefill profile's ranking, run once and only if asked (no closures per request: see ProfileRuns). */
class PrefillRun implements DeciderContext {
  private ranked: Endpoint[] | undefined;
  constructor(
    private readonly ctx: ProfileContext,
    private readonly profile: string,
    private readonly decodeId: string,
  ) {}

  targets(): Endpoint[] {
    // the decode pick cannot also be its own remote prefiller
    this.ranked ??= (this.ctx.run(this.profile)?.targets ?? []).filter((e) => e.id !== this.decodeId);
    return this.ranked;
  }

  prefillPick(): Endpoint | undefined {
    return this.targets()[0];
  }
}
