// The JS API of atp-wasm as a JavaScript user sees it: the exported camelCase names, plain objects,
// and thrown Errors with readable messages. tests/web.rs covers the behaviour from Rust; this checks
// the wasm-bindgen surface of the release build with the JS bindings:
//   cargo build --target wasm32-unknown-unknown -p atp-wasm --features js --release
//   wasm-bindgen --target nodejs --out-dir <dir> target/wasm32-unknown-unknown/release/atp_wasm.wasm
//   node scripts/js-api-test.mjs <dir>/atp_wasm.js
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const atp = createRequire(import.meta.url)(resolve(process.argv[2]));
const data = JSON.parse(readFileSync(new URL('../atp-wasm/tests/data/reference-signing.json', import.meta.url)));

const api = ['canonicalize', 'canonicalizeJcs', 'generateDomainKey', 'signMessage', 'verifyMessage',
  'parseAts', 'parseAtk', 'parseSvcb'];
for (const name of api) assert.equal(typeof atp[name], 'function', `export ${name}`);

function throws(fn, what) {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof Error, `${what}: throws an Error`);
    assert.ok(e.message.length > 0, `${what}: with a message`);
    console.log(`  ${what}: ${e.message}`);
    return;
  }
  assert.fail(`${what}: did not throw`);
}
const plain = (o) => assert.equal(Object.getPrototypeOf(o), Object.prototype);

// The reference's vectors: canonical form of the signed fields, and their signatures verify.
const pub = data.key.public_key_b64;
let compared = 0;
for (const v of data.vectors) {
  const m = JSON.parse(v.message);
  const signable = {};
  for (const k of ['from', 'to', 'timestamp', 'nonce', 'type', 'payload']) signable[k] = m[k];
  if (Array.isArray(m.cc) && m.cc.length) signable.cc = m.cc;
  if (m.routing != null) signable.routing = m.routing;
  // The canonical form is a fixed point. From a JS-built object it is compared only where JS numbers
  // and JSON.stringify keep the text exact (big integers and Python floats would not survive).
  assert.equal(atp.canonicalize(v.canonical), v.canonical, v.name);
  if (JSON.stringify(JSON.parse(v.canonical)) === v.canonical) {
    assert.equal(atp.canonicalize(JSON.stringify(signable)), v.canonical, v.name);
    compared++;
  }
  const signed = v.message.replace(/\}\s*$/, `, "signature": ${JSON.stringify(v.signature)}}`);
  assert.equal(atp.verifyMessage(signed, pub), true, v.name);
}
assert.equal(atp.canonicalizeJcs('{"b":1e-7,"a":1e16}'), '{"a":10000000000000000,"b":1e-7}');
throws(() => atp.canonicalize('{'), 'canonicalize("{")');
throws(() => atp.canonicalizeJcs('{"a":1,"a":2}'), 'canonicalizeJcs(duplicate key)');

// Keys, signing and verifying.
const key = atp.generateDomainKey();
plain(key);
assert.match(key.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
assert.equal(Buffer.from(key.publicKey, 'base64').length, 32);
const msg = JSON.stringify({ from: 'agent@web.test', to: 'bob@beta.test', timestamp: 1800000000,
  nonce: 'msg-js-api-1', type: 'message', payload: { body: 'hi' } });
const signed = atp.signMessage(msg, key.privateKeyPem, 'default', 'web.test');
const parsed = JSON.parse(signed);
assert.equal(parsed.signature.key_id, 'default.atk._atp.web.test');
assert.equal(parsed.signature.algorithm, 'ed25519');
assert.equal(atp.verifyMessage(signed, key.publicKey), true);
throws(() => atp.verifyMessage(JSON.stringify({ ...parsed, nonce: 'msg-tampered' }), key.publicKey),
  'verifyMessage(tampered)');
throws(() => atp.verifyMessage(signed, atp.generateDomainKey().publicKey), 'verifyMessage(other key)');
throws(() => atp.verifyMessage(msg, key.publicKey), 'verifyMessage(unsigned)');
throws(() => atp.verifyMessage(signed, 'short'), 'verifyMessage(bad key)');
throws(() => atp.signMessage(msg, 'not a pem', 'default', 'web.test'), 'signMessage(bad pem)');
throws(() => atp.signMessage('{"from":"x"}', key.privateKeyPem, 'default', 'web.test'),
  'signMessage(bad message)');

// DNS records.
const ats = atp.parseAts('v=atp1 allow=ip:10.0.0.0/8 allow=domain:mx.a.test deny=all');
plain(ats);
assert.deepEqual(ats.directives.map((d) => [d.action, d.kind, d.value]),
  [['allow', 'ip', '10.0.0.0/8'], ['allow', 'domain', 'mx.a.test'], ['deny', 'all', null]]);
throws(() => atp.parseAts('v=spf1 -all'), 'parseAts(spf)');
const atk = atp.parseAtk(data.key.atk_record);
plain(atk);
assert.equal(atk.publicKey, pub);
assert.equal(atk.revoked, false);
throws(() => atp.parseAtk('v=atp1 k=ed25519'), 'parseAtk(no key)');
const svcb = atp.parseSvcb('1 atp.a.test. alpn="atp/1,h2" port=8443 ipv4hint=192.0.2.1');
plain(svcb);
assert.deepEqual([svcb.priority, svcb.target, svcb.port, svcb.alpn, svcb.ipv4hint],
  [1, 'atp.a.test', 8443, ['atp/1', 'h2'], ['192.0.2.1']]);
throws(() => atp.parseSvcb('x'), 'parseSvcb("x")');

assert.ok(compared > 0);
console.log(`JS API: ${api.length} exports checked; ${data.vectors.length} reference signatures verified,` +
  ` ${compared} canonical forms rebuilt from JS objects`);
