// Hugging Face model folders: config.json + model.safetensors (or shards listed in
// model.safetensors.index.json) + tokenizer.json. HF stores Q/K rows in rotate-half order, so the
// model is loaded as-is with ropeStyle 'neox' (no permutation).
import { join } from 'node:path';
import { isObject, kindOf, readBytes, readJson } from './files.ts';
import { buildWeights, shapeText, validateConfig, type TensorSlot } from './layout.ts';
import type { LoadedParts } from './llama2c.ts';
import { parseSafetensors, safetensorsF32, type SafetensorsEntry, type SafetensorsFile } from './safetensors.ts';
import { readHfTokenizer, readTokenizerOverride } from './tokenizer-files.ts';
import type { Matrix, ModelConfig } from './types.ts';
import { ModelLoadError } from './types.ts';

const LAYER_NAMES: Record<string, string> = {
  attn_norm: 'input_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_norm: 'post_attention_layernorm',
  ffn_gate: 'mlp.gate_proj',
  ffn_down: 'mlp.down_proj',
  ffn_up: 'mlp.up_proj',
};

/** The HF names a slot may be stored under, preferred first. A tied model may store the shared
 * matrix under either name (TinyStories-656K keeps only lm_head.weight). */
function hfNames(slot: TensorSlot, tied: boolean): string[] {
  if (slot.name === 'token_embd.weight') return tied ? ['model.embed_tokens.weight', 'lm_head.weight'] : ['model.embed_tokens.weight'];
  if (slot.name === 'output.weight') return ['lm_head.weight'];
  if (slot.name === 'output_norm.weight') return ['model.norm.weight'];
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(slot.name)!;
  return [`model.layers.${m[1]}.${LAYER_NAMES[m[2]!]}.weight`];
}

function configNumber(file: string, cfg: Record<string, unknown>, key: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new ModelLoadError(file, `missing ${key}`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ModelLoadError(file, `${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function hfConfig(file: string, cfg: unknown): ModelConfig {
  if (!isObject(cfg)) throw new ModelLoadError(file, 'bad config.json: not a JSON object');
  const archs = Array.isArray(cfg.architectures) ? cfg.architectures : [];
  const isLlama = cfg.model_type === 'llama' || archs.includes('LlamaForCausalLM');
  if (!isLlama)
    throw new ModelLoadError(file, `architecture ${JSON.stringify(archs[0] ?? cfg.model_type ?? 'unknown')} is not supported (llama only)`);
  if (cfg.rope_scaling !== undefined && cfg.rope_scaling !== null)
    throw new ModelLoadError(file, `rope_scaling ${JSON.stringify(cfg.rope_scaling)} is not supported`);
  if (cfg.attention_bias === true || cfg.mlp_bias === true) throw new ModelLoadError(file, 'attention_bias/mlp_bias are not supported');
  if (cfg.hidden_act !== undefined && cfg.hidden_act !== 'silu')
    throw new ModelLoadError(file, `hidden_act ${JSON.stringify(cfg.hidden_act)} is not supported (silu only)`);
  const dim = configNumber(file, cfg, 'hidden_size');
  const nHeads = configNumber(file, cfg, 'num_attention_heads');
  const config: ModelConfig = {
    architecture: 'llama',
    dim,
    hiddenDim: configNumber(file, cfg, 'intermediate_size'),
    nLayers: configNumber(file, cfg, 'num_hidden_layers'),
    nHeads,
    nKvHeads: configNumber(file, cfg, 'num_key_value_heads', nHeads),
    headDim: configNumber(file, cfg, 'head_dim', nHeads > 0 ? dim / nHeads : 0),
    vocabSize: configNumber(file, cfg, 'vocab_size'),
    contextLength: configNumber(file, cfg, 'max_position_embeddings', 2048),
    ropeTheta: configNumber(file, cfg, 'rope_theta', 10000),
    rmsEps: configNumber(file, cfg, 'rms_norm_eps', 1e-6),
    ropeStyle: 'neox',
    tiedEmbeddings: cfg.tie_word_embeddings === true,
  };
  validateConfig(file, config, {
    dim: 'hidden_size',
    hiddenDim: 'intermediate_size',
    nLayers: 'num_hidden_layers',
    nHeads: 'num_attention_heads',
    nKvHeads: 'num_key_value_heads',
    headDim: 'head_dim',
    vocabSize: 'vocab_size',
    contextLength: 'max_position_embeddings',
    rmsEps: 'rms_norm_eps',
    ropeTheta: 'rope_theta',
  });
  return config;
}

/** Token id from config.json / generation_config.json (eos may be a list: the first is the EOS). */
function tokenId(v: unknown): number | undefined {
  if (Array.isArray(v)) v = v[0];
  return Number.isInteger(v) && (v as number) >= 0 ? (v as number) : undefined;
}

export async function loadHfDir(dir: string, tokenizerPath: string | undefined): Promise<LoadedParts> {
  const configPath = join(dir, 'config.json');
  if ((await kindOf(configPath)) !== 'file') throw new ModelLoadError(dir, 'not a model folder: no config.json');
  const rawConfig = await readJson(configPath, 'config.json');
  const config = hfConfig(configPath, rawConfig);

  // Which file holds which tensor: one model.safetensors, or shards named by the index
  const single = join(dir, 'model.safetensors');
  const indexPath = join(dir, 'model.safetensors.index.json');
  const fileOf = new Map<string, string>();
  let defaultFile: string | undefined;
  if ((await kindOf(single)) === 'file') defaultFile = single;
  else if ((await kindOf(indexPath)) === 'file') {
    const index = await readJson(indexPath, 'safetensors index');
    if (!isObject(index) || !isObject(index.weight_map)) throw new ModelLoadError(indexPath, 'bad safetensors index: no weight_map');
    for (const [name, f] of Object.entries(index.weight_map)) {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\')) throw new ModelLoadError(indexPath, `bad safetensors index entry for ${name}`);
      fileOf.set(name, join(dir, f));
    }
  } else {
    const hasTorch = (await kindOf(join(dir, 'pytorch_model.bin'))) === 'file';
    throw new ModelLoadError(dir, hasTorch ? 'only safetensors weights are supported (found pytorch_model.bin)' : 'no model.safetensors');
  }
  const opened = new Map<string, SafetensorsFile>();
  for (const f of new Set([...(defaultFile ? [defaultFile] : []), ...fileOf.values()]))
    opened.set(f, parseSafetensors(f, await readBytes(f)));

  const find = (name: string): [SafetensorsFile, SafetensorsEntry] | undefined => {
    const f = opened.get(fileOf.get(name) ?? defaultFile ?? '');
    const e = f?.tensors.get(name);
    return f && e ? [f, e] : undefined;
  };
  const weightsFile = defaultFile ?? indexPath;
  const weights = buildWeights(config, (slot) => {
    const names = hfNames(slot, config.tiedEmbeddings);
    const found = names.map(find).find((x) => x !== undefined);
    if (!found) throw new ModelLoadError(weightsFile, `missing tensor ${names.join(' or ')}`);
    const [f, e] = found;
    if (e.shape.length !== slot.shape.length || e.shape.some((d, i) => d !== slot.shape[i]))
      throw new ModelLoadError(f.file, `tensor ${e.name} has shape ${shapeText(e.shape)}, expected ${shapeText(slot.shape)}`);
    const data = safetensorsF32(f, e);
    if (slot.kind === 'vector') return data;
    const m: Matrix = { type: 'f32', rows: slot.shape[0], cols: slot.shape[1]!, data };
    return m;
  });

  const genPath = join(dir, 'generation_config.json');
  const gen = (await kindOf(genPath)) === 'file' ? await readJson(genPath, 'generation_config.json') : undefined;
  const cfgObj = rawConfig as Record<string, unknown>;
  const genObj = isObject(gen) ? gen : {};
  const bos = tokenId(genObj.bos_token_id) ?? tokenId(cfgObj.bos_token_id);
  const eos = tokenId(genObj.eos_token_id) ?? tokenId(cfgObj.eos_token_id);
  const overrides = { ...(bos !== undefined ? { bos } : {}), ...(eos !== undefined ? { eos } : {}) };
  let tok;
  if (tokenizerPath) tok = await readTokenizerOverride(tokenizerPath, config.vocabSize, overrides);
  else {
    const tj = join(dir, 'tokenizer.json');
    if ((await kindOf(tj)) !== 'file') throw new ModelLoadError(dir, 'no tokenizer.json (pass --tokenizer)');
    tok = await readHfTokenizer(tj, config.vocabSize, overrides);
  }
  return {
    format: 'hf',
    config,
    weights,
    tokenizer: tok.spec,
    ...(tok.chatTemplate !== undefined ? { chatTemplate: tok.chatTemplate } : {}),
  };
}
