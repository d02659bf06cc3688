// Splitting text on literal token strings (control/special/added tokens) before the merge step.
// Matching is leftmost-longest, as tokenizers' Aho-Corasick and llama.cpp's partitioner do.

export interface LiteralToken {
  content: string;
  id: number;
  /** swallow whitespace on the left / right of a match (tokenizers' AddedToken lstrip/rstrip) */
  lstrip?: boolean;
  rstrip?: boolean;
}

export type Fragment = { kind: 'text'; text: string; start: number } | { kind: 'token'; id: number };

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const WHITESPACE = /\s/u;

export class LiteralMatcher {
  private readonly pattern: RegExp | undefined;
  private readonly byContent = new Map<string, LiteralToken>();

  constructor(tokens: readonly LiteralToken[]) {
    for (const t of tokens) {
      if (t.content.length > 0 && !this.byContent.has(t.content)) this.byContent.set(t.content, t);
    }
    // Longest first, so the regex's first matching alternative is the longest at that position.
    const contents = [...this.byContent.keys()].sort((a, b) => b.length - a.length);
    this.pattern = contents.length > 0 ? new RegExp(contents.map(escapeRegExp).join('|'), 'g') : undefined;
  }

  get empty(): boolean {
    return this.pattern === undefined;
  }

  /** Text fragments (with their start offset in `text`) and matched token ids, in order; empty text is dropped. */
  split(text: string): Fragment[] {
    const out: Fragment[] = [];
    if (!this.pattern) {
      if (text.length > 0) out.push({ kind: 'text', text, start: 0 });
      return out;
    }
    const re = new RegExp(this.pattern.source, 'g');
    let last = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const tok = this.byContent.get(m[0])!;
      let start = m.index;
      let end = start + m[0].length;
      if (tok.lstrip) while (start > last && WHITESPACE.test(text[start - 1]!)) start--;
      if (tok.rstrip) while (end < text.length && WHITESPACE.test(text[end]!)) end++;
      if (start > last) out.push({ kind: 'text', text: text.slice(last, start), start: last });
      out.push({ kind: 'token', id: tok.id });
      last = end;
      re.lastIndex = end;
    }
    if (last < text.length) out.push({ kind: 'text', text: text.slice(last), start: last });
    return out;
  }
}
