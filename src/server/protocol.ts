// OpenAI request bodies → engine requests. Every field vLLM's CompletionRequest and
// ChatCompletionRequest accept and tandem implements is validated here, once; the rest of the
// server trusts the result. Fields tandem cannot honour are refused with 400 rather than ignored.

import type { SamplingParams } from '../engine/api.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { ApiError, badField } from './errors.ts';
import { Fields, checkTokenIds, show } from './fields.ts';
import { type ChatTemplate, parseMessages } from './chat.ts';

/** vLLM's default --max-logprobs */
export const MAX_LOGPROBS = 20;
/** choices per request: each is a full engine request, so keep one request from flooding the queue */
export const MAX_N = 64;

export interface ServedModel {
  name: string;
  maxModelLen: number;
  tokenizer: Tokenizer;
  chatTemplate: ChatTemplate;
}

/** What both endpoints hand to the generation loop. */
export interface GenerationPlan {
  kind: 'completion' | 'chat';
  promptIds: number[];
  /** choices: n engine requests sharing the prompt */
  n: number;
  /** completions' echo: the prompt text to put before the completion */
  echoText?: string;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  maxTokens: number;
  minTokens?: number;
  sampling: SamplingParams;
  stop?: string[];
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  includeStopStrInOutput?: boolean;
  /** top-N logprobs to ask the engine for (undefined = none) */
  logprobs?: number;
  cacheSalt?: string;
  kvTransferParams?: Record<string, unknown>;
}

const NUM = {
  temperature: { min: 0, describe: 'a number ≥ 0' },
  top_p: { above: 0, max: 1, describe: 'a number in (0, 1]' },
  top_k: { integer: true, min: -1, describe: 'an integer: -1 or 0 (off), or ≥ 1' },
  min_p: { min: 0, max: 1, describe: 'a number in [0, 1]' },
  repetition_penalty: { above: 0, describe: 'a number > 0' },
  presence_penalty: { min: -2, max: 2, describe: 'a number in [-2, 2]' },
  frequency_penalty: { min: -2, max: 2, describe: 'a number in [-2, 2]' },
  seed: { integer: true, min: -(2 ** 63), max: 2 ** 64, describe: 'an integer' },
  max_tokens: { integer: true, min: 1, describe: 'an integer ≥ 1' },
  min_tokens: { integer: true, min: 0, describe: 'an integer ≥ 0' },
  n: { integer: true, min: 1, max: MAX_N, describe: `an integer in [1, ${MAX_N}]` },
} as const;

/** The model named in the body must be the served one (absent = the served one, as in vLLM). */
export function checkModel(f: Fields, served: ServedModel): void {
  const model = f.string('model');
  if (model !== undefined && model !== served.name) {
    throw new ApiError(404, `The model \`${model}\` does not exist.`, 'not_found_error', 'model', 'model_not_found');
  }
}

export function parseCompletionRequest(body: Record<string, unknown>, served: ServedModel): GenerationPlan {
  const f = new Fields(body);
  checkModel(f, served);
  if (f.has('suffix')) throw badField('suffix', 'is not supported');
  const bestOf = f.number('best_of', NUM.n);
  if (bestOf !== undefined && bestOf !== 1) throw badField('best_of', 'must be 1 (best_of > 1 is not supported)');
  const addSpecial = f.bool('add_special_tokens') ?? true;
  const promptIds = completionPrompt(f.raw('prompt'), served.tokenizer, addSpecial);
  const logprobs = f.number('logprobs', { integer: true, min: 0, max: MAX_LOGPROBS, describe: `an integer in [0, ${MAX_LOGPROBS}]` });
  const echo = f.bool('echo') ?? false;
  if (echo && logprobs !== undefined) throw badField('echo', 'cannot be combined with logprobs (prompt logprobs are not supported)');
  const plan = common(f, served, 'completion', promptIds, f.number('max_tokens', NUM.max_tokens), 'max_tokens');
  plan.logprobs = logprobs;
  if (echo) plan.echoText = served.tokenizer.decode(promptIds);
  return plan;
}

export function parseChatRequest(body: Record<string, unknown>, served: ServedModel): GenerationPlan {
  const f = new Fields(body);
  checkModel(f, served);
  const promptIds = chatPrompt(f, served);
  // max_completion_tokens is the current name; max_tokens the deprecated one (vLLM prefers the former).
  const mct = f.number('max_completion_tokens', NUM.max_tokens);
  const mt = f.number('max_tokens', NUM.max_tokens);
  const plan = common(f, served, 'chat', promptIds, mct ?? mt, mct !== undefined ? 'max_completion_tokens' : 'max_tokens');
  const logprobs = f.bool('logprobs') ?? false;
  const top = f.number('top_logprobs', { integer: true, min: 0, max: MAX_LOGPROBS, describe: `an integer in [0, ${MAX_LOGPROBS}]` });
  if (top !== undefined && top > 0 && !logprobs) throw badField('top_logprobs', 'requires logprobs to be true');
  if (logprobs) plan.logprobs = top ?? 0;
  const toolChoice = f.raw('tool_choice');
  if (toolChoice !== undefined && toolChoice !== 'none' && toolChoice !== 'auto') {
    throw badField('tool_choice', "must be 'none' or 'auto' (tool calling is not supported)");
  }
  return plan;
}

/** The messages → prompt path shared by chat completions and /tokenize. */
export function chatPrompt(f: Fields, served: ServedModel): number[] {
  const messages = parseMessages(f.raw('messages'));
  const continueFinal = f.bool('continue_final_message') ?? false;
  const addGenerationPrompt = f.bool('add_generation_prompt') ?? !continueFinal;
  const kwargs = { ...f.object('chat_template_kwargs') };
  const tools = f.raw('tools');
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw badField('tools', `must be an array, got ${show(tools)}`);
    kwargs.tools = tools;
  }
  const rf = f.object('response_format');
  if (rf && rf.type !== 'text') throw badField('response_format', "type must be 'text' (structured output is not supported)");
  const text = served.chatTemplate.render(messages, { addGenerationPrompt, continueFinalMessage: continueFinal, kwargs });
  return encodeChat(text, served, f.bool('add_special_tokens'));
}

/**
 * Templates such as Llama's begin with {{ bos_token }}; the rendered text then starts with BOS's
 * piece. Rather than rely on the tokenizer recognising that string, strip it and add the BOS id.
 * Other templates and the default one get BOS exactly when the tokenizer would add it itself.
 */
function encodeChat(text: string, served: ServedModel, addSpecial: boolean | undefined): number[] {
  const tok = served.tokenizer;
  const bosPiece = tok.piece(tok.bos);
  if (bosPiece && text.startsWith(bosPiece)) {
    return tok.encode(text.slice(bosPiece.length), { addBos: true, parseSpecial: true });
  }
  const modelDefault = served.chatTemplate.isDefault || addSpecial === true;
  return tok.encode(text, { addBos: modelDefault ? undefined : false, parseSpecial: true });
}

/** prompt: string | [string] | token ids | [token ids]. Batches of several prompts are refused. */
export function completionPrompt(prompt: unknown, tok: Tokenizer, addSpecial: boolean): number[] {
  if (prompt === undefined || prompt === null) throw badField('prompt', 'is required');
  let p = prompt;
  if (Array.isArray(p) && p.length > 0 && (typeof p[0] === 'string' || Array.isArray(p[0]))) {
    if (p.length !== 1) throw badField('prompt', `must be a single prompt (got a batch of ${p.length}); send one request per prompt`);
    p = p[0];
  }
  let ids: number[];
  if (typeof p === 'string') {
    ids = tok.encode(p, { addBos: addSpecial ? undefined : false, parseSpecial: true });
  } else if (Array.isArray(p)) {
    checkTokenIds(p, 'prompt', tok.vocabSize);
    ids = p;
  } else {
    throw badField('prompt', `must be a string, an array of token ids, or a one-element array of either; got ${show(prompt)}`);
  }
  if (ids.length === 0) throw badField('prompt', 'must not be empty');
  return ids;
}

function common(
  f: Fields,
  served: ServedModel,
  kind: GenerationPlan['kind'],
  promptIds: number[],
  requestedMax: number | undefined,
  maxName: string,
): GenerationPlan {
  const n = f.number('n', NUM.n) ?? 1;
  const kvTransferParams = f.object('kv_transfer_params');
  if (n > 1 && kvTransferParams) throw badField('n', 'must be 1 when kv_transfer_params is set (P/D legs carry one sequence)');
  const stream = f.bool('stream') ?? false;
  const so = f.object('stream_options');
  if (so && !stream) throw badField('stream_options', 'can only be set when stream is true');
  const soFields = new Fields(so ?? {});
  const includeUsage = soFields.bool('include_usage') ?? false;
  const continuousUsage = soFields.bool('continuous_usage_stats') ?? false;

  const maxLen = served.maxModelLen;
  const p = promptIds.length;
  if (p >= maxLen) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${maxLen} tokens. However, your request has ${p} input tokens. Please reduce the length of the input.`,
      'invalid_request_error',
      kind === 'chat' ? 'messages' : 'prompt',
      'context_length_exceeded',
    );
  }
  if (requestedMax !== undefined && p + requestedMax > maxLen) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${maxLen} tokens. However, you requested ${p + requestedMax} tokens ` +
        `(${p} in the ${kind === 'chat' ? 'messages' : 'prompt'}, ${requestedMax} for the completion). ` +
        `Please reduce the length of the ${kind === 'chat' ? 'messages' : 'prompt'} or the ${maxName}.`,
      'invalid_request_error',
      maxName,
      'context_length_exceeded',
    );
  }
  const maxTokens = requestedMax ?? maxLen - p;
  const minTokens = f.number('min_tokens', NUM.min_tokens);
  if (minTokens !== undefined && minTokens > maxTokens) throw badField('min_tokens', `must be ≤ ${maxName} (${maxTokens})`);

  const topK = f.number('top_k', NUM.top_k);
  const sampling: SamplingParams = {
    temperature: f.number('temperature', NUM.temperature) ?? 1,
    topP: f.number('top_p', NUM.top_p) ?? 1,
    topK: topK === undefined || topK < 0 ? 0 : topK,
    minP: f.number('min_p', NUM.min_p) ?? 0,
    repetitionPenalty: f.number('repetition_penalty', NUM.repetition_penalty) ?? 1,
    presencePenalty: f.number('presence_penalty', NUM.presence_penalty) ?? 0,
    frequencyPenalty: f.number('frequency_penalty', NUM.frequency_penalty) ?? 0,
  };
  const seed = f.number('seed', NUM.seed);
  if (seed !== undefined) sampling.seed = seed;

  const logitBias = f.object('logit_bias');
  if (logitBias && Object.keys(logitBias).length > 0) throw badField('logit_bias', 'is not supported');

  return {
    kind,
    promptIds,
    n,
    stream,
    includeUsage,
    continuousUsage,
    maxTokens,
    minTokens,
    sampling,
    stop: f.strings('stop'),
    stopTokenIds: f.tokenIds('stop_token_ids', served.tokenizer.vocabSize),
    ignoreEos: f.bool('ignore_eos'),
    includeStopStrInOutput: f.bool('include_stop_str_in_output'),
    cacheSalt: f.string('cache_salt', { nonEmpty: true }),
    kvTransferParams,
  };
}
