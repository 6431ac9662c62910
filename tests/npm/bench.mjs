// Throughput of the npm package in Node against pure JavaScript: @noble/ed25519 (with node:crypto's
// SHA-512) + the `canonicalize` package (RFC 8785), and node:crypto's native Ed25519 (OpenSSL) for
// scale. Run by hand: tests/npm/bench.sh (BENCH_SECONDS per case, default 2).
//
// Each case does the whole job on a message as ATP carries it: sign = parse the JSON, canonical
// form of the signed fields, Ed25519, attach the envelope, serialise; verify = parse, canonical form,
// base64-decode, Ed25519 verify; canonicalize = JSON text in, canonical text out.
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import * as ed from '@noble/ed25519';
import canonicalize from 'canonicalize';
import * as atp from 'atp-wasm';

ed.hashes.sha512 = (m) => createHash('sha512').update(m).digest();
const SECONDS = Number(process.env.BENCH_SECONDS || 2);

const message = {
  from: 'alice@alpha.test', to: 'bob@beta.test', timestamp: 1800000000, nonce: 'msg-0123456789abcdef0123456789abcdef',
  type: 'message',
  payload: { subject: 'Quarterly numbers', body: 'Hello Bob, the figures are attached. '.repeat(4),
    data: { rows: [[1, 2.5, 'x'], [3, 4.25, 'y']], ok: true, note: null }, tags: ['finance', 'q3'] },
};
const messageJson = JSON.stringify(message);
const SIGNED = ['from', 'to', 'timestamp', 'nonce', 'type', 'payload'];
const signable = (m) => Object.fromEntries(SIGNED.filter((k) => k in m).map((k) => [k, m[k]]));
const enc = new TextEncoder();
const b64 = (u8) => Buffer.from(u8).toString('base64');

// Keys: the same seed for every implementation.
const key = atp.generateDomainKey();
const der = Buffer.from(key.privateKeyPem.split('\n').slice(1, -2).join(''), 'base64');
const seed = new Uint8Array(der.subarray(der.length - 32));
const pub = new Uint8Array(Buffer.from(key.publicKey, 'base64'));
const nodePriv = createPrivateKey(key.privateKeyPem);
const nodePub = createPublicKey(nodePriv);
if (b64(ed.getPublicKey(seed)) !== key.publicKey) throw new Error('key mismatch');

function envelope(sig) {
  return { key_id: 'default.atk._atp.alpha.test', algorithm: 'ed25519', signature: b64(sig),
    headers: ['from', 'to', 'timestamp', 'nonce', 'type'], timestamp: 1800000001 };
}
const jsSign = (signer) => (json) => {
  const m = JSON.parse(json);
  m.signature = envelope(signer(enc.encode(canonicalize(signable(m)))));
  return JSON.stringify(m);
};
const jsVerify = (verifier) => (json) => {
  const m = JSON.parse(json);
  const ok = verifier(Buffer.from(m.signature.signature, 'base64'), enc.encode(canonicalize(signable(m))));
  if (!ok) throw new Error('bad signature');
  return ok;
};
const nobleSign = jsSign((bytes) => ed.sign(bytes, seed));
const nobleVerify = jsVerify((sig, bytes) => ed.verify(sig, bytes, pub));
const nodeCryptoSign = jsSign((bytes) => nodeSign(null, bytes, nodePriv));
const nodeCryptoVerify = jsVerify((sig, bytes) => nodeVerify(null, bytes, nodePub, sig));
const atpSign = (json) => atp.signMessage(json, key.privateKeyPem, 'default', 'alpha.test');
const atpVerify = (json) => atp.verifyMessage(json, key.publicKey);

// Everyone signs the same bytes: the signatures must be identical (Ed25519 is deterministic).
const signedAtp = atpSign(messageJson);
const sigOf = (json) => JSON.parse(json).signature.signature;
if (sigOf(signedAtp) !== sigOf(nobleSign(messageJson)) || sigOf(signedAtp) !== sigOf(nodeCryptoSign(messageJson))) {
  throw new Error('the implementations disagree on the signature');
}
if (canonicalize(JSON.parse(messageJson)) !== atp.canonicalize(messageJson)) throw new Error('canonical forms differ');

function bench(fn, arg) {
  for (let i = 0; i < 200; i++) fn(arg);
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(SECONDS * 1e9));
  let now = start;
  while (now < end) {
    for (let i = 0; i < 50; i++) fn(arg);
    n += 50;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

const cases = [
  ['canonicalize', [
    ['atp-wasm canonicalize (reference form)', atp.canonicalize, messageJson],
    ['atp-wasm canonicalizeJcs (RFC 8785)', atp.canonicalizeJcs, messageJson],
    ['canonicalize (npm, RFC 8785) + JSON.parse', (j) => canonicalize(JSON.parse(j)), messageJson],
  ]],
  ['sign', [
    ['atp-wasm signMessage', atpSign, messageJson],
    ['@noble/ed25519 + canonicalize', nobleSign, messageJson],
    ['node:crypto Ed25519 (OpenSSL) + canonicalize', nodeCryptoSign, messageJson],
  ]],
  ['verify', [
    ['atp-wasm verifyMessage', atpVerify, signedAtp],
    ['@noble/ed25519 + canonicalize', nobleVerify, signedAtp],
    ['node:crypto Ed25519 (OpenSSL) + canonicalize', nodeCryptoVerify, signedAtp],
  ]],
];
console.log(`Node ${process.version}, ${SECONDS} s per case, message ${messageJson.length} bytes of JSON`);
const results = {};
for (const [group, list] of cases) {
  console.log(`\n${group}`);
  for (const [name, fn, arg] of list) {
    const ops = bench(fn, arg);
    results[`${group}: ${name}`] = Math.round(ops);
    console.log(`  ${name.padEnd(48)} ${Math.round(ops).toLocaleString('en-US').padStart(10)} ops/s`);
  }
}
if (process.env.BENCH_JSON) console.log(JSON.stringify(results));
