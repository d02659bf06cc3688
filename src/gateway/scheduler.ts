// Runs one scheduling cycle: data producers, then the profile handler, which runs profiles
// (filters in order → weighted scorers, total = Σ weight · clamp(score, 0, 1) → picker).
import type { Profile, SchedulerConfig } from './config.ts';
import type { Endpoint, ProfileContext, ProfileRunResult, ScoredEndpoint, SchedulingRequest, SchedulingResult } from './types.ts';

export class Scheduler {
  /** the profile names handed to the handler on every cycle (fixed by the config) */
  private readonly profileNames: ReadonlySet<string>;

  constructor(readonly config: SchedulerConfig) {
    this.profileNames = new Set(config.profiles.keys());
  }

  /** Producers first (they may await an engine tokenizer), then the synchronous profile run. */
  async schedule(req: SchedulingRequest, candidates: readonly Endpoint[]): Promise<SchedulingResult> {
    for (const p of this.config.producers) {
      const r = p.produce(req, candidates);
      if (r) await r;
    }
    return this.pick(req, candidates);
  }

  /**
   * The same cycle, synchronous when no producer has to wait (the common case: a cached or estimated
   * token count), so the request path takes no promise hop for it.
   */
  scheduleNow(req: SchedulingRequest, candidates: readonly Endpoint[]): SchedulingResult | Promise<SchedulingResult> {
    const producers = this.config.producers;
    for (let i = 0; i < producers.length; i++) {
      const r = producers[i]!.produce(req, candidates);
      if (r) return this.finish(r, i + 1, req, candidates);
    }
    return this.pick(req, candidates);
  }

  private async finish(pending: Promise<void>, next: number, req: SchedulingRequest, candidates: readonly Endpoint[]): Promise<SchedulingResult> {
    await pending;
    const producers = this.config.producers;
    for (let i = next; i < producers.length; i++) {
      const r = producers[i]!.produce(req, candidates);
      if (r) await r;
    }
    return this.pick(req, candidates);
  }

  /** The profile handler's part alone (producers already ran). */
  pick(req: SchedulingRequest, candidates: readonly Endpoint[]): SchedulingResult {
    return this.config.handler.schedule(req, new ProfileRuns(this.profileNames, this.config.profiles, req, candidates));
  }

  /** Tell the producers where the request went (approximate prefix learning). */
  routed(req: SchedulingRequest, result: SchedulingResult): void {
    for (const p of this.config.producers) p.routed?.(req, result);
  }

  async close(): Promise<void> {
    for (const p of this.config.producers) await p.close?.();
  }
}

/**
 * Runs each profile at most once per request. A class rather than an object literal of closures:
 * the request path creates no named closures (tsx's keepNames turns each into a defineProperty call).
 */
class ProfileRuns implements ProfileContext {
  private readonly memo = new Map<string, ProfileRunResult | undefined>();
  constructor(
    readonly profiles: ReadonlySet<string>,
    private readonly defs: ReadonlyMap<string, Profile>,
    private readonly req: SchedulingRequest,
    private readonly candidates: readonly Endpoint[],
  ) {}

  run(name: string): ProfileRunResult | undefined {
    if (this.memo.has(name)) return this.memo.get(name);
    const profile = this.defs.get(name);
    const r = profile ? runProfile(profile, this.req, this.candidates) : undefined;
    this.memo.set(name, r);
    return r;
  }
}

export function runProfile(profile: Profile, req: SchedulingRequest, candidates: readonly Endpoint[]): ProfileRunResult {
  let eps: readonly Endpoint[] = candidates;
  for (const f of profile.filters) {
    eps = f.filter(req, eps);
    if (eps.length === 0) return { targets: [] };
  }
  const totals = new Float64Array(eps.length);
  for (const { scorer, weight } of profile.scorers) {
    if (weight === 0) continue;
    const s = scorer.score(req, eps);
    for (let i = 0; i < eps.length; i++) {
      const v = s[i]!;
      totals[i]! += weight * (v > 1 ? 1 : v > 0 ? v : 0);
    }
  }
  const scored: ScoredEndpoint[] = eps.map((endpoint, i) => ({ endpoint, score: totals[i]! }));
  return { targets: profile.picker.pick(scored) };
}
