// Transfer tokens: the capability that lets a decode engine read one request's leased blocks.
//
// Without a secret a token is 128 random bits (hex) stored with the lease: unguessable, so only
// whoever received leg 1's response can pull. With a shared secret (`--kv-secret`) the token is
// `<nonce>.<HMAC-SHA256(secret, engineId|requestId|nonce)>`, so a token minted for one request
// (or by one engine) can never pass for another, even if leases are later looked up by id alone.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export function mintTransferToken(engineId: string, requestId: string, secret?: string): string {
  const nonce = randomBytes(16).toString('hex');
  if (!secret) return nonce;
  return `${nonce}.${mac(secret, engineId, requestId, nonce)}`;
}

/** Constant-time check of a presented token against the one minted for this lease. */
export function verifyTransferToken(presented: string, minted: string, engineId: string, requestId: string, secret?: string): boolean {
  if (secret) {
    const dot = presented.indexOf('.');
    if (dot !== 32) return false;
    const expected = mac(secret, engineId, requestId, presented.slice(0, dot));
    if (!safeEqual(presented.slice(dot + 1), expected)) return false;
  }
  return safeEqual(presented, minted);
}

function mac(secret: string, engineId: string, requestId: string, nonce: string): string {
  return createHmac('sha256', secret).update(`${engineId}|${requestId}|${nonce}`).digest('hex');
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}
