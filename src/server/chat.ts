// Chat templates: OpenAI messages → one prompt string, as Hugging Face transformers renders them.
//
// A model's own Jinja template (tokenizer_config.json's chat_template, GGUF's tokenizer.chat_template)
// is rendered with @huggingface/jinja and the variables transformers passes: messages,
// add_generation_prompt, bos_token, eos_token (raise_exception is built into the renderer). Models without a template (the
// TinyStories family) get DEFAULT_CHAT_TEMPLATE, a plain "role: content" transcript.

import { Template } from '@huggingface/jinja';
import { ApiError, badField } from './errors.ts';

/**
 * The documented fallback: one "role: content" line per message, then "assistant:" when a
 * generation prompt is asked for. Story models have no chat format; this keeps the prompt readable
 * and the turn boundary explicit.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{%- for message in messages -%}" +
  "{{ message['role'] + ': ' + message['content'] + '\\n' }}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{ 'assistant:' }}{%- endif -%}";

/** A message after validation; content parts are flattened to text (vLLM's "string" content format). */
export interface ChatMessage {
  role: string;
  content: string;
  [extra: string]: unknown;
}

export interface RenderOptions {
  addGenerationPrompt: boolean;
  /** leave the final (assistant) message open so the model continues it */
  continueFinalMessage?: boolean;
  /** extra template variables (vLLM's chat_template_kwargs) */
  kwargs?: Record<string, unknown>;
}

export class ChatTemplate {
  private readonly template: Template;
  readonly isDefault: boolean;

  constructor(
    source: string | undefined,
    private readonly specialTokens: { bos_token: string; eos_token: string },
  ) {
    this.isDefault = !source;
    // Parse once at startup: a broken template is a model problem, reported before serving.
    this.template = new Template(source || DEFAULT_CHAT_TEMPLATE);
  }

  render(messages: ChatMessage[], opts: RenderOptions): string {
    if (opts.continueFinalMessage && opts.addGenerationPrompt) {
      throw new ApiError(400, 'continue_final_message and add_generation_prompt cannot both be true', 'invalid_request_error', 'continue_final_message');
    }
    let text: string;
    try {
      text = this.template.render({
        ...opts.kwargs,
        messages,
        add_generation_prompt: opts.addGenerationPrompt,
        ...this.specialTokens,
      });
    } catch (err) {
      // raise_exception() (built into @huggingface/jinja) lands here too: the template's own message.
      throw new ApiError(400, `chat template: ${(err as Error).message}`, 'invalid_request_error', 'messages');
    }
    if (opts.continueFinalMessage) {
      // transformers' behaviour: cut the rendering right after the final message's content, so the
      // end-of-turn markup the template adds after it is dropped.
      const last = messages[messages.length - 1]!.content;
      const at = last ? text.lastIndexOf(last.trim()) : -1;
      if (at < 0) throw new ApiError(400, 'continue_final_message: the final message content was not found in the rendered prompt', 'invalid_request_error', 'messages');
      text = text.slice(0, at + last.trim().length);
    }
    return text;
  }
}

/** Validate `messages` at the boundary. */
export function parseMessages(value: unknown): ChatMessage[] {
  if (!Array.isArray(value)) throw badField('messages', 'must be an array of messages');
  if (value.length === 0) throw badField('messages', 'must contain at least one message');
  return value.map((m, i): ChatMessage => {
    const where = `messages[${i}]`;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw badField(where, 'must be an object');
    const { role, content, ...rest } = m as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') throw badField(`${where}.role`, 'must be a non-empty string');
    return { ...rest, role, content: flattenContent(content, `${where}.content`) };
  });
}

function flattenContent(content: unknown, where: string): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badField(where, 'must be a string or an array of content parts');
  const texts: string[] = [];
  content.forEach((part, j) => {
    const at = `${where}[${j}]`;
    if (typeof part === 'string') {
      texts.push(part);
      return;
    }
    if (part === null || typeof part !== 'object') throw badField(at, 'must be a content part object');
    const p = part as Record<string, unknown>;
    if (p.type !== 'text') throw badField(`${at}.type`, `'${String(p.type)}' is not supported (text only)`);
    if (typeof p.text !== 'string') throw badField(`${at}.text`, 'must be a string');
    texts.push(p.text);
  });
  return texts.join('\n');
}
