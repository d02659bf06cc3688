// A model's identity for KV reuse: two engines may exchange KV blocks only if they compute the
// same function, so the digest covers what changes the KV values (architecture, RoPE, norm eps,
// every weight bit) and nothing else (not the name, the file format, the context length or the
// tokenizer). The same tensors loaded from a llama2.c .bin and an F32 GGUF hash identically.
import { createHash } from 'node:crypto';
import { slotTensor, tensorSlots } from './layout.ts';
import type { ModelConfig, ModelWeights } from './types.ts';
import { f32Bytes } from './numeric.ts';

/** Bumped if the hashed layout ever changes, so old digests never collide with new ones. */
const FINGERPRINT_VERSION = 'tandem-model-v1';

/** sha256 (hex) over a canonical header and then every tensor in canonical order (layout.ts):
 * per tensor its name, type and shape, then its bytes (f32 little-endian as stored, Q8_0 blocks raw).
 * A tied classifier is not hashed twice. Synthetic models are hashed the same way (≈0.3 s for 100m),
 * so a synthetic model exported to GGUF and read back keeps its fingerprint. */
export function fingerprintModel(c: ModelConfig, w: ModelWeights): string {
  const h = createHash('sha256');
  const header = [
    FINGERPRINT_VERSION,
    `dim=${c.dim}`,
    `hidden=${c.hiddenDim}`,
    `layers=${c.nLayers}`,
    `heads=${c.nHeads}`,
    `kv_heads=${c.nKvHeads}`,
    `head_dim=${c.headDim}`,
    `vocab=${c.vocabSize}`,
    `rope=${c.ropeStyle}`,
    `theta=${c.ropeTheta}`,
    `eps=${c.rmsEps}`,
  ].join(' ');
  h.update(header + '\n');
  for (const slot of tensorSlots(c)) {
    const t = slotTensor(w, slot.name);
    if (t instanceof Float32Array) {
      h.update(`${slot.name} f32 [${t.length}]\n`);
      h.update(f32Bytes(t));
    } else {
      h.update(`${slot.name} ${t.type} [${t.rows}, ${t.cols}]\n`);
      h.update(t.type === 'f32' ? f32Bytes(t.data) : t.data);
    }
  }
  return h.digest('hex');
}
