// label-selector-filter: Kubernetes label-selector semantics over endpoint labels
// (matchLabels AND every matchExpression; operators In, NotIn, Exists, DoesNotExist).
import { ParamError, type Endpoint, type Filter } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

type Expr = { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values: string[] };

export const labelSelectorFilter: PluginFactory = {
  type: 'label-selector-filter',
  kind: 'filter',
  create(name, raw): Filter {
    const p = asParams(raw);
    only(p, ['matchLabels', 'matchExpressions']);
    const matchLabels: Record<string, string> = {};
    if (p.matchLabels !== undefined) {
      if (typeof p.matchLabels !== 'object' || p.matchLabels === null || Array.isArray(p.matchLabels)) {
        throw new ParamError('matchLabels must be a map of label → value', ['matchLabels']);
      }
      for (const [k, v] of Object.entries(p.matchLabels)) {
        if (typeof v !== 'string') throw new ParamError(`matchLabels.${k} must be a string`, ['matchLabels', k]);
        matchLabels[k] = v;
      }
    }
    const exprs: Expr[] = [];
    if (p.matchExpressions !== undefined) {
      if (!Array.isArray(p.matchExpressions)) throw new ParamError('matchExpressions must be a list', ['matchExpressions']);
      p.matchExpressions.forEach((e: unknown, i) => {
        const path = ['matchExpressions', i];
        if (typeof e !== 'object' || e === null) throw new ParamError('each match expression must be a map', path);
        const { key, operator, values } = e as Record<string, unknown>;
        if (typeof key !== 'string') throw new ParamError('key must be a string', path);
        if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(operator as string)) {
          throw new ParamError(`operator must be In, NotIn, Exists or DoesNotExist, got ${JSON.stringify(operator)}`, path);
        }
        const vals = values === undefined ? [] : values;
        if (!Array.isArray(vals) || !vals.every((v) => typeof v === 'string')) throw new ParamError('values must be a list of strings', path);
        if ((operator === 'In' || operator === 'NotIn') && vals.length === 0) throw new ParamError(`${operator} needs values`, path);
        exprs.push({ key, operator: operator as Expr['operator'], values: vals as string[] });
      });
    }
    const matches = (ep: Endpoint): boolean => {
      for (const [k, v] of Object.entries(matchLabels)) if (ep.labels[k] !== v) return false;
      for (const e of exprs) {
        const has = Object.hasOwn(ep.labels, e.key);
        const v = ep.labels[e.key];
        if (e.operator === 'Exists' && !has) return false;
        if (e.operator === 'DoesNotExist' && has) return false;
        if (e.operator === 'In' && !(has && e.values.includes(v!))) return false;
        if (e.operator === 'NotIn' && has && e.values.includes(v!)) return false;
      }
      return true;
    };
    return { type: 'label-selector-filter', name, kind: 'filter', filter: (_req, eps) => eps.filter(matches) };
  },
};
