// single-profile-handler: runs the one profile; the request goes to its pick (no P/D).
import { NoEndpointError, type ProfileHandler } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

export const singleProfileHandler: PluginFactory = {
  type: 'single-profile-handler',
  kind: 'profile-handler',
  create(name, params): ProfileHandler {
    only(asParams(params), []);
    return {
      type: 'single-profile-handler',
      name,
      kind: 'profile-handler',
      schedule(_req, ctx) {
        const [profile] = ctx.profiles;
        const r = profile === undefined ? undefined : ctx.run(profile);
        if (!r || r.targets.length === 0) throw new NoEndpointError('no endpoint available');
        return { decision: 'decode-only', decode: r.targets, reason: `single profile '${profile}'` };
      },
    };
  },
};
