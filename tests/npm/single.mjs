// The packed package against one real atp-native server (plain HTTP), as an agent uses it:
// register two agents, send, recv with the cursor and with wait, the errors as AtpErrors; a
// transfer signed by the SDK is accepted by atp-native (and a tampered one refused), its stored
// signature verifies in the SDK (by key and over DNS) and in the reference implementation, and
// the reference's fresh signature verifies in the SDK. Then TLS: a self-signed server is refused
// unless the process allows it.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AtpClient, AtpError, generateDomainKey, signMessage, verifyMessage } from 'atp-wasm';
import { checkCount, eq, freePort, ok, reference, rejects, scratch, sleep, startServer, tableLookup } from './lib.mjs';

const dir = scratch('single');
// A foreign domain whose key atp-native knows from its dns_override table (docs/protocol.md §8.9).
const sdk = generateDomainKey();
const overrides = { 'default.atk._atp.sdk.test': [`v=atp1 k=ed25519 p=${sdk.publicKey}`] };
const overrideFile = join(dir, 'dns_override.toml');
writeFileSync(overrideFile, Object.entries(overrides).map(([n, [r]]) => `["${n}"]\nrecord = "${r}"\n`).join('\n'));
const server = await startServer('alpha.test', {
  config: `local_mode = true\ndns_override_file = "${overrideFile}"\n`,
});
console.log(`atp-native alpha.test on ${server.url} (pid ${server.pid})`);

// --- agents ------------------------------------------------------------------------------------
let fetches = 0;
const countingFetch = (url, init) => {
  fetches++;
  return fetch(url, init);
};
const alice = new AtpClient({ agentId: 'alice', password: 'alice-pw', server: server.url, fetch: countingFetch });
const bob = new AtpClient({ agentId: 'Bob@Alpha.test', password: 'bob:pw', server: server.url });
eq(alice.server, server.url, 'server URL');
eq(alice.agentId, undefined, 'a short name is not complete yet');

const health = await alice.health();
eq([health.status, health.domain], ['healthy', 'alpha.test'], 'health');
eq(alice.agentId, 'alice@alpha.test', 'completed from health');
eq((await bob.capabilities()).protocols, ['atp/1'], 'capabilities');
eq(await alice.register(), { status: 'registered', agent_id: 'alice@alpha.test' }, 'register alice');
eq((await bob.register()).agent_id, 'bob@alpha.test', 'register bob');
const dup = await rejects(bob.register(), 'register twice');
ok(dup instanceof AtpError, 'AtpError');
eq([dup.kind, dup.status, dup.code], ['http', 409, '550 5.1.6'], 'taken name');
ok(fetches >= 2, 'the custom fetch is used');

const sent = await alice.send('bob', { subject: 'hi', body: 'Hello Bob', cc: ['carol'] });
eq(sent.status, 'accepted', 'send');
ok(/^msg-[0-9a-f]{32}$/.test(sent.nonce), 'nonce');
eq([sent.message.from, sent.message.to, sent.message.cc], ['alice@alpha.test', 'bob@alpha.test', ['carol@alpha.test']], 'ids completed');
const inbox = await bob.recv();
eq(inbox.length, 1, 'one message');
const m = inbox[0];
eq([m.from, m.to, m.nonce, m.type, m.payload], ['alice@alpha.test', 'bob@alpha.test', sent.nonce, 'message',
  { body: 'Hello Bob', subject: 'hi' }], 'the message');
eq(m.timestamp, sent.timestamp, 'timestamp');
ok(m.signature === undefined, 'local mail is not signed');
ok(bob.cursor > 0, 'cursor moved');
eq(await bob.recv(), [], 'nothing new');
const again = new AtpClient({ agentId: 'bob@alpha.test', password: 'bob:pw', server: server.url });
eq((await again.recv({ limit: 10 })).length, 1, 'a new client starts at the beginning');
again.cursor = bob.cursor;
eq(await again.recv(), [], 'a saved cursor resumes');

// wait: mail arriving while recv polls.
const waiting = bob.recv({ wait: 10, pollInterval: 100 });
await sleep(400);
const big = await alice.send('bob@alpha.test', { payload: { task: 'sum', n: 1 } });
const got = await waiting;
eq(got.map((x) => x.nonce), [big.nonce], 'recv with wait got the message sent while waiting');
const rawBig = '{"from":"alice@alpha.test","to":"bob@alpha.test","timestamp":' + Math.floor(Date.now() / 1000) +
  ',"nonce":"msg-raw-1","type":"message","payload":{"n":12345678901234567890,"x":1e-05}}';
const direct = await fetch(`${server.url}/.well-known/atp/v1/message`, {
  method: 'POST',
  headers: { 'content-type': 'application/atp+json', authorization: 'Basic ' + btoa('alice@alpha.test:alice-pw') },
  body: rawBig,
});
eq(direct.status, 202, 'a raw submission');
const raw = await bob.recvRaw();
ok(raw.length === 1 && raw[0].includes('"n":12345678901234567890') && raw[0].includes('1e-05'), 'recvRaw keeps the digits');

// --- push: subscribe (backlog, then live; resumes by itself), ack (docs/protocol.md §6.5) --------
{
  const carol = new AtpClient({ agentId: 'carol', password: 'carol-pw', server: server.url });
  await carol.register();
  const backlog = [];
  for (const body of ['one', 'two', 'three']) backlog.push((await alice.send('carol', { body })).nonce);
  // A fetch that cuts the first stream right after its first event: the subscription must resume
  // with Last-Event-ID and hand out every message exactly once.
  let opens = 0;
  const cutting = async (url, init) => {
    const resp = await fetch(url, init);
    if (!url.includes('/messages/stream') || opens++ > 0) return resp;
    const reader = resp.body.getReader();
    let text = '';
    let cut = false;
    const body = new ReadableStream({
      async pull(c) {
        if (cut) {
          await reader.cancel();
          return c.close();
        }
        const { done, value } = await reader.read();
        if (done) return c.close();
        const chunk = new TextDecoder().decode(value);
        text += chunk;
        const at = text.indexOf('event: message');
        const end = at < 0 ? -1 : text.indexOf('\n\n', at);
        if (end < 0) return c.enqueue(value);
        // Forward up to the end of the first event only, then end the stream.
        c.enqueue(new TextEncoder().encode(chunk.slice(0, end + 2 - (text.length - chunk.length))));
        cut = true;
      },
    });
    return new Response(body, { status: resp.status, headers: resp.headers });
  };
  const resuming = new AtpClient({ agentId: 'carol', password: 'carol-pw', server: server.url, fetch: cutting });
  const sub = resuming.subscribe();
  const seen = [];
  for await (const msg of sub) {
    seen.push(msg.nonce);
    if (seen.length === 3) break;
  }
  eq(seen, backlog, 'subscribe: the backlog, each once, across a dropped connection');
  eq(opens, 2, 'it reconnected by itself');
  ok(sub.lastId > 0 && resuming.cursor === sub.lastId, 'the cursor follows the messages');
  // Live: a message sent while waiting.
  const live = resuming.subscribe();
  const next = live.next();
  await sleep(300);
  const fresh = await alice.send('carol', { body: 'live' });
  eq((await next).value.nonce, fresh.nonce, 'subscribe: a live message');
  eq(await live.return(), { value: undefined, done: true }, 'return() closes it');
  // ack: the acknowledged messages are gone; another agent's id is refused.
  eq(await carol.ack({ upTo: sub.lastId }), 3, 'ack upTo');
  eq((await carol.recv({ after: 0 })).map((x) => x.nonce), [fresh.nonce], 'only the live one is left');
  const notMine = await rejects(carol.ack({ ids: [999999] }), 'ack of an id that is not carol\'s');
  eq([notMine.status, notMine.code], [404, '550 5.1.0'], 'ack: not yours');
  const noAuth = await rejects(new AtpClient({ agentId: 'carol', password: 'wrong', server: server.url }).subscribe().next(),
    'subscribe with a wrong password');
  eq([noAuth.status, noAuth.code], [401, '535 5.7.8'], 'subscribe: 401');
}

// Errors.
const wrong = new AtpClient({ agentId: 'alice', password: 'nope', server: server.url });
const e401 = await rejects(wrong.send('bob', { body: 'x' }), 'wrong password');
eq([e401.kind, e401.status, e401.code], ['http', 401, '535 5.7.8'], 'wrong password: 401');
const e404 = await rejects(alice.send('nobody', { body: 'x' }), 'unknown recipient');
eq([e404.status, e404.code], [404, '550 5.1.1'], 'unknown recipient: 404 5.1.1');
const down = new AtpClient({ server: `http://127.0.0.1:${await freePort()}` });
const eNet = await rejects(down.health(), 'nothing listening');
eq([eNet.kind, eNet.status, eNet.code], ['network', 0, null], 'connection refused');
ok(/ECONNREFUSED/.test(eNet.message), `the cause is in the message: ${eNet.message}`);

// --- signatures across implementations ----------------------------------------------------------
// A transfer signed by the SDK, as the server of sdk.test would send it: atp-native verifies it.
const now = Math.floor(Date.now() / 1000);
const transfer = signMessage(JSON.stringify({ from: 'agent@sdk.test', to: 'bob@alpha.test', timestamp: now,
  nonce: `msg-sdk-${now}`, type: 'message', payload: { body: 'signed in wasm', x: 1e-5, uni: 'é中' } }),
sdk.privateKeyPem, 'default', 'sdk.test');
const post = (body) => fetch(`${server.url}/.well-known/atp/v1/message`, {
  method: 'POST', headers: { 'content-type': 'application/atp+json' }, body,
});
const tampered = transfer.replace('signed in wasm', 'signed in wasm!');
const refused = await post(tampered);
eq([refused.status, (await refused.json()).error_code], [403, '550 5.7.28'], 'atp-native refuses a tampered SDK signature');
const accepted = await post(transfer);
eq(accepted.status, 202, `atp-native accepts the SDK's signature (${accepted.status})`);
const [stored] = await bob.recvRaw();
ok(stored && JSON.parse(stored).signature.key_id === 'default.atk._atp.sdk.test', 'stored with its signature');
eq(verifyMessage(stored, sdk.publicKey), true, 'the stored copy verifies by key');
eq(await verifyMessage(stored, tableLookup(overrides)), true, 'the stored copy verifies over DNS');
eq(await verifyMessage(stored, { lookup: tableLookup({}) }).catch((e) => e.code), '550 5.7.29', 'no key published');

const refDir = scratch('reference');
const file = (name, text) => {
  const p = join(refDir, name);
  writeFileSync(p, text);
  return p;
};
const refVerdict = reference('verify', sdk.publicKey, file('sdk.json', transfer));
if (refVerdict) {
  eq(JSON.parse(refVerdict), { passed: true, error_code: null, error_message: null },
    "the reference verifies the SDK's signature");
  eq(JSON.parse(reference('verify', sdk.publicKey, file('tampered.json', tampered))).error_code, '550 5.7.28',
    'the reference refuses the tampered one');
  // The reference reads the SDK's PEM key and signs (its own canonical form: Python floats, big
  // integers, cc, routing); the SDK verifies that fresh signature on the exact text.
  const plain = `{"from": "agent@sdk.test", "to": "bob@alpha.test", "timestamp": ${now}, "nonce": "msg-ref-1", ` +
    '"type": "message", "payload": {"f": [0.1, 1e16, 2.5e-08, -0.0, 1.0], "big": 1152921504606846977, ' +
    '"s": "\\u2028/\\u00e9"}, "cc": ["x@y.test"], "routing": {"hop": 1}}';
  const refSigned = reference('sign', file('key.pem', sdk.privateKeyPem), 'default', 'sdk.test', file('plain.json', plain));
  ok(refSigned.includes('"signature": {"key_id": "default.atk._atp.sdk.test"'), `reference signature: ${refSigned}`);
  eq(verifyMessage(refSigned, sdk.publicKey), true, "the SDK verifies the reference's signature");
  eq(await post(refSigned).then((r) => r.status), 202, "atp-native accepts the reference's signature too");
  console.log('reference implementation: signatures verified both ways');
} else {
  console.log('reference implementation: SKIPPED (ATP_REF_PYTHON not set)');
}

// --- TLS ----------------------------------------------------------------------------------------
const tls = await startServer('tls.test', { tls: true });
const strict = new AtpClient({ server: `127.0.0.1:${tls.port}` });
const eTls = await rejects(strict.health(), 'a self-signed certificate');
eq(eTls.kind, 'network', 'certificate refused');
const hinted = new AtpClient({ server: `127.0.0.1:${tls.port}`, verifyTls: false });
const eHint = await rejects(hinted.health(), 'verifyTls: false alone');
ok(eHint.message.includes('NODE_TLS_REJECT_UNAUTHORIZED=0'), 'with the hint');
const child = spawnSync(process.execPath, ['--input-type=module', '-e', `
  import { AtpClient } from 'atp-wasm';
  const c = new AtpClient({ server: 'https://127.0.0.1:${tls.port}', verifyTls: false });
  console.log(JSON.stringify(await c.health()));`], { encoding: 'utf8', env: { ...process.env, NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
eq(child.status, 0, `https with NODE_TLS_REJECT_UNAUTHORIZED=0 (${child.stderr})`);
eq(JSON.parse(child.stdout).domain, 'tls.test', 'health over TLS 1.3');

server.stop();
tls.stop();
console.log(`single.mjs: ${checkCount()} checks passed`);
