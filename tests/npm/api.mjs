// The installed package as a JavaScript user sees it, without a server: entry points (ESM and
// CommonJS resolve to the Node builds and export the same API), AtpError, the reference's signature
// vectors, keys, signing, canonical forms, records.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as atp from 'atp-wasm';
import init, { AtpError } from 'atp-wasm';
import { checkCount, eq, ok, rejects, throws } from './lib.mjs';

const require = createRequire(import.meta.url);
const cjs = require('atp-wasm');
const vectors = JSON.parse(readFileSync(process.env.ATP_VECTORS, 'utf8'));

// Entry points.
ok(import.meta.resolve('atp-wasm').endsWith('/node_modules/atp-wasm/node.mjs'), 'import resolves to node.mjs');
ok(require.resolve('atp-wasm').endsWith('/node_modules/atp-wasm/node.cjs'), 'require resolves to node.cjs');
const api = ['AtpClient', 'AtpError', 'canonicalize', 'canonicalizeJcs', 'dnsRecords', 'dohQuery', 'evaluateAts',
  'generateDomainKey', 'parseAtk', 'parseAts', 'parseSvcb', 'resolveAtp', 'signMessage', 'verifyMessage'];
for (const name of api) {
  ok(typeof atp[name] === 'function', `ESM export ${name}`);
  ok(typeof cjs[name] === 'function', `CommonJS export ${name}`);
}
await init();
await cjs.default();
eq(cjs.canonicalize('{"b":1,"a":[1.0,1e-05]}'), atp.canonicalize('{"b":1,"a":[1.0,1e-05]}'), 'both builds agree');
const pkg = require('atp-wasm/package.json');
ok(/^\d+\.\d+\.\d+/.test(pkg.version), 'package.json is exported');

// AtpError: thrown by the SDK, recognised by both builds' classes.
const e = throws(() => new atp.AtpClient({ server: 'ftp://x' }), 'bad server address');
ok(e instanceof Error && e instanceof AtpError && e instanceof cjs.AtpError, 'AtpError instanceof');
eq([e.name, e.kind, e.status, e.code], ['AtpError', 'invalid', 0, null], 'AtpError fields');
ok(!(new Error('x') instanceof AtpError), 'a plain Error is no AtpError');
const mine = new AtpError('mine', { kind: 'http', status: 500 });
eq([mine.name, mine.kind, mine.status, mine.code, mine.message], ['AtpError', 'http', 500, null, 'mine'], 'new AtpError');

// The reference's signatures verify; the canonical forms match its bytes.
const pub = vectors.key.public_key_b64;
for (const v of vectors.vectors) {
  eq(atp.canonicalize(v.canonical), v.canonical, `canonical fixed point ${v.name}`);
  const signed = v.message.replace(/\}\s*$/, `, "signature": ${JSON.stringify(v.signature)}}`);
  eq(atp.verifyMessage(signed, pub), true, `reference signature ${v.name}`);
  eq(cjs.verifyMessage(signed, pub), true, `reference signature ${v.name} (CommonJS)`);
  const lookup = async (name, type) => (name === v.signature.key_id && type === 'TXT' ? [vectors.key.atk_record] : []);
  // ATK checks the key's validity now; the vectors' timestamps do not matter for it.
  eq(await atp.verifyMessage(signed, lookup), true, `reference signature over DNS ${v.name}`);
  const tampered = signed.replace(/"nonce": "[^"]*"/, '"nonce": "msg-tampered"');
  const err = throws(() => atp.verifyMessage(tampered, pub), `tampered ${v.name}`);
  eq([err.kind, err.code, err.message], ['verify', '550 5.7.28', 'Signature verification failed'], 'tampered: why');
}

// Keys and signatures made here.
const key = atp.generateDomainKey();
ok(key.privateKeyPem.startsWith('-----BEGIN PRIVATE KEY-----\n'), 'PKCS#8 PEM');
eq(Buffer.from(key.publicKey, 'base64').length, 32, 'raw 32-byte public key');
const msg = JSON.stringify({ from: 'Agent@Web.test', to: 'bob@beta.test', timestamp: 1800000000, nonce: 'msg-api-1',
  type: 'message', payload: { body: 'héllo', n: [1.5, 1e-7] }, cc: ['c@d.test'] });
const signed = atp.signMessage(msg, key.privateKeyPem, 'default', 'web.test');
const s = JSON.parse(signed);
eq([s.from, s.signature.key_id, s.signature.algorithm], ['agent@web.test', 'default.atk._atp.web.test', 'ed25519'], 'signed');
eq(atp.verifyMessage(signed, key.publicKey), true, 'own signature');
eq(atp.verifyMessage(s, key.publicKey), true, 'an object is stringified');
throws(() => atp.verifyMessage(signed, atp.generateDomainKey().publicKey), 'another key');
throws(() => atp.signMessage(msg, 'not a pem', 'default', 'web.test'), 'bad pem');
const noRecord = await rejects(atp.verifyMessage(signed, { lookup: async () => [] }), 'no ATK record');
eq([noRecord.kind, noRecord.status, noRecord.code], ['verify', 403, '550 5.7.29'], 'no ATK record: 5.7.29');

// Records.
eq(atp.parseAts('v=atp1 allow=ip:10.0.0.0/8 deny=all').directives.map((d) => d.text), ['allow=ip:10.0.0.0/8', 'deny=all'], 'ATS');
eq((await atp.evaluateAts('v=atp1 allow=ip:10.0.0.0/8 deny=all', '10.9.8.7')).result, 'pass', 'ATS pass');
eq((await atp.evaluateAts('v=atp1 allow=ip:10.0.0.0/8 deny=all', '192.0.2.1')).directive, 'deny=all', 'ATS fail');
eq(atp.parseAtk(vectors.key.atk_record).publicKey, pub, 'ATK');
eq(atp.parseSvcb('1 atp.a.test. alpn="atp/1" port=17443').port, 17443, 'SVCB');
const zone = atp.dnsRecords('a.test', '192.0.2.7', key.publicKey);
eq(zone.length, 4, 'zone lines');
eq(atp.parseSvcb(zone[0].split(' IN SVCB ')[1]).target, 'atp.a.test', 'the zone SVCB line parses back');

console.log(`api.mjs: ${checkCount()} checks passed (${vectors.vectors.length} reference vectors)`);
