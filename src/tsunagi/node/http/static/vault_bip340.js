// BIP340 Schnorr signatures over secp256k1, for the holder's two signatures in the browser
// (the channel's transcript and the release; and the holder's call records), which WebCrypto
// does not offer. Written from BIP340's specification with BigInt arithmetic in affine
// coordinates; SHA-256 is WebCrypto's.
// Held to BIP340's test vectors and to tsunagi.core.keys in chromium
// (tests/test_vault_browser.py). BigInt arithmetic is not constant-time: a holder's page
// signs a handful of times per step, on the holder's own device, and a page that can time
// those steps could read the keys directly, so timing is not the exposure here.
"use strict";

window.tsunagiBip340 = (function () {
  const P = 2n ** 256n - 2n ** 32n - 977n;
  const N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141n;
  const G = [0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798n,
             0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8n];
  const utf8 = new TextEncoder();

  function mod(a, m) {
    const r = a % m;
    return r >= 0n ? r : r + m;
  }

  function inverse(a, m) {  // extended Euclid; a is not 0 mod m
    let [low, high, x0, x1] = [mod(a, m), m, 1n, 0n];
    while (low > 1n) {
      const q = high / low;
      [low, high] = [high - q * low, low];
      [x0, x1] = [x1 - q * x0, x0];
    }
    return mod(x0, m);
  }

  function add(a, b) {  // null is the point at infinity
    if (a === null) return b;
    if (b === null) return a;
    if (a[0] === b[0] && a[1] !== b[1]) return null;
    const slope = a[0] === b[0] && a[1] === b[1]
      ? mod(3n * a[0] * a[0] * inverse(2n * a[1], P), P)
      : mod((b[1] - a[1]) * inverse(b[0] - a[0], P), P);
    const x = mod(slope * slope - a[0] - b[0], P);
    return [x, mod(slope * (a[0] - x) - a[1], P)];
  }

  function multiply(k, base) {
    let result = null;
    let point = base || G;
    while (k > 0n) {
      if (k & 1n) result = add(result, point);
      point = add(point, point);
      k >>= 1n;
    }
    return result;
  }

  function toInt(bytes) {
    let value = 0n;
    for (const byte of bytes) value = (value << 8n) | BigInt(byte);
    return value;
  }

  function toBytes(value) {
    const bytes = new Uint8Array(32);
    for (let i = 31; i >= 0; i -= 1) {
      bytes[i] = Number(value & 0xffn);
      value >>= 8n;
    }
    return bytes;
  }

  function concat(...parts) {
    const joined = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of parts) {
      joined.set(part, at);
      at += part.length;
    }
    return joined;
  }

  async function sha256(data) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  }

  async function taggedHash(tag, data) {
    const tagHash = await sha256(utf8.encode(tag));
    return sha256(concat(tagHash, tagHash, data));
  }

  function publicKey(secret) {
    const d = toInt(secret);
    if (d <= 0n || d >= N) throw new Error("a BIP340 secret key is 1 to n-1");
    return toBytes(multiply(d)[0]);
  }

  // BIP340's Sign(sk, m) with 32 bytes of auxiliary randomness (fresh when not given).
  async function sign(secret, message, aux) {
    const auxRand = aux || crypto.getRandomValues(new Uint8Array(32));
    const d0 = toInt(secret);
    if (d0 <= 0n || d0 >= N) throw new Error("a BIP340 secret key is 1 to n-1");
    const point = multiply(d0);
    const d = point[1] % 2n === 0n ? d0 : N - d0;
    const masked = toBytes(d ^ toInt(await taggedHash("BIP0340/aux", auxRand)));
    const px = toBytes(point[0]);
    const k0 = mod(toInt(await taggedHash("BIP0340/nonce", concat(masked, px, message))), N);
    if (k0 === 0n) throw new Error("BIP340: the nonce is zero; sign again");
    const r = multiply(k0);
    const k = r[1] % 2n === 0n ? k0 : N - k0;
    const rx = toBytes(r[0]);
    const e = mod(toInt(await taggedHash("BIP0340/challenge", concat(rx, px, message))), N);
    return concat(rx, toBytes(mod(k + e * d, N)));
  }

  function power(base, exponent, m) {
    let result = 1n;
    base = mod(base, m);
    while (exponent > 0n) {
      if (exponent & 1n) result = (result * base) % m;
      base = (base * base) % m;
      exponent >>= 1n;
    }
    return result;
  }

  function liftX(x) {  // the point with this x and an even y, or null
    if (x >= P) return null;
    const c = mod(x * x * x + 7n, P);
    const y = power(c, (P + 1n) / 4n, P);
    if (mod(y * y, P) !== c) return null;
    return [x, y % 2n === 0n ? y : P - y];
  }

  // BIP340's Verify(pk, m, sig): the page checks the service's identity with it.
  async function verify(publicBytes, message, signature) {
    const point = liftX(toInt(publicBytes));
    const r = toInt(signature.slice(0, 32));
    const s = toInt(signature.slice(32, 64));
    if (point === null || signature.length !== 64 || r >= P || s >= N) return false;
    const e = mod(toInt(await taggedHash("BIP0340/challenge",
                                         concat(signature.slice(0, 32), publicBytes, message))),
                  N);
    const found = add(multiply(s), multiply(N - e, point));
    return found !== null && found[1] % 2n === 0n && found[0] === r;
  }

  return { publicKey, sign, verify };
}());
